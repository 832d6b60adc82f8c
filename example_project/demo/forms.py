"""The demo's forms: every value a visitor posts is validated here, so that bad input is a
form error (400) and never a 500."""

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator

from example_project.demo.models import Product


class SignupForm(forms.Form):
    username = forms.CharField(max_length=150, validators=[UnicodeUsernameValidator()])
    email = forms.EmailField()
    mode = forms.ChoiceField(
        choices=[("background", "background jobs"), ("synchronous", "synchronous")],
        required=False,
    )

    def clean_username(self) -> str:
        username: str = self.cleaned_data["username"]
        if get_user_model().objects.filter(username=username).exists():
            raise forms.ValidationError(f"The username {username!r} is taken.")
        return username

    def clean_mode(self) -> str:
        return self.cleaned_data.get("mode") or "background"


class CheckoutForm(forms.Form):
    product = forms.ModelChoiceField(queryset=Product.objects.all())
    quantity = forms.IntegerField(min_value=1, max_value=10, initial=1, required=False)
    email = forms.EmailField(required=False)
    card = forms.CharField(max_length=40)

    def clean_quantity(self) -> int:
        return self.cleaned_data.get("quantity") or 1

    def clean_email(self) -> str:
        return self.cleaned_data.get("email") or "customer@example.com"


class ReportForm(forms.Form):
    rows = forms.IntegerField(min_value=10, max_value=5000, initial=200)
    flaky = forms.BooleanField(required=False)


class PartnerForm(forms.Form):
    count = forms.IntegerField(min_value=1, max_value=500, initial=30)


class HomeActionForm(forms.Form):
    action = forms.ChoiceField(choices=[("fail", "enqueue a job that always fails")])

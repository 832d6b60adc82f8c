"""What the demo scenarios write: profiles made at sign-up, a small shop, analytics events,
and the calls the rate-limited partner API received."""

from django.conf import settings
from django.db import models


class Profile(models.Model):
    """Provisioned after sign-up by background jobs."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    provisioned_at = models.DateTimeField(null=True, blank=True)
    crm_id = models.CharField(max_length=64, blank=True)
    avatar = models.CharField(max_length=255, blank=True, help_text="Path under MEDIA_ROOT.")

    def __str__(self) -> str:
        return f"profile of user {self.user_id}"


class Product(models.Model):
    sku = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    price_cents = models.PositiveIntegerField()
    stock = models.IntegerField(default=0)

    def __str__(self) -> str:
        return self.name


class Order(models.Model):
    class Status(models.TextChoices):
        AUTHORIZED = "authorized"
        DECLINED = "declined"

    product = models.ForeignKey(Product, on_delete=models.PROTECT)
    quantity = models.PositiveIntegerField(default=1)
    email = models.EmailField()
    status = models.CharField(max_length=16, choices=Status.choices)
    total_cents = models.PositiveIntegerField()
    authorization = models.CharField(max_length=64, blank=True)
    reserved = models.BooleanField(default=False)
    receipt_sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"order {self.pk}"


class AnalyticsEvent(models.Model):
    name = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class PartnerCall(models.Model):
    """One request the fake partner API answered (to show the rate limit at work)."""

    item = models.PositiveIntegerField()
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"partner call {self.item}"

from django.urls import path

from example_project.demo import views

app_name = "demo"
urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    path("signup/<int:user_id>/", views.signup_done, name="signup-done"),
    path("checkout/", views.checkout, name="checkout"),
    path("checkout/<int:order_id>/", views.order_done, name="order-done"),
    path("reports/", views.reports, name="reports"),
    path("reports/<uuid:batch_id>/", views.report_status, name="report-status"),
    path("reports/<uuid:batch_id>.csv", views.report_download, name="report-download"),
    path("partner/", views.partner, name="partner"),
    path("fake/crm/", views.fake_crm, name="fake-crm"),
    path("fake/partner/<int:item>/", views.fake_partner, name="fake-partner"),
]

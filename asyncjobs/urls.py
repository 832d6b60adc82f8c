"""Include with ``path("jobs/", include("asyncjobs.urls"))``."""

from asyncjobs.api.urls import urlpatterns

app_name = "asyncjobs"

__all__ = ["app_name", "urlpatterns"]

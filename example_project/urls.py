from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from asyncjobs.metrics import metrics_view

urlpatterns = [
    path("", include("example_project.demo.urls")),
    path("admin/", admin.site.urls),
    path("jobs/", include("asyncjobs.urls")),
    path("metrics/", metrics_view),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    *static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT),  # DEBUG only
]

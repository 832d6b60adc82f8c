from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from asyncjobs.metrics import metrics_view

urlpatterns = [
    path("jobs/", include("asyncjobs.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("admin/", admin.site.urls),
    path("metrics/", metrics_view),
    path("demo/", include("example_project.demo.urls")),
]


from django.views.decorators.csrf import csrf_exempt  # noqa: E402


@csrf_exempt
def enqueue_for_me(request):
    """A view that enqueues a job, as a project's view would."""
    from django.http import JsonResponse

    from tests import tasks

    return JsonResponse({"id": tasks.add.enqueue(1, 1).id})


urlpatterns.append(path("enqueue-for-me/", enqueue_for_me))

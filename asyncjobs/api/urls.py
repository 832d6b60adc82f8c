from django.urls import path

from asyncjobs.api import views

urlpatterns = [
    path("", views.JobListCreateView.as_view(), name="job-list"),
    path("stats/", views.StatsView.as_view(), name="job-stats"),
    path("queues/<str:name>/pause/", views.QueuePauseView.as_view(paused=True), name="queue-pause"),
    path(
        "queues/<str:name>/resume/", views.QueuePauseView.as_view(paused=False), name="queue-resume"
    ),
    path("batches/<str:batch_id>/", views.BatchDetailView.as_view(), name="batch-detail"),
    path("batches/<str:batch_id>/events/", views.BatchEventsView.as_view(), name="batch-events"),
    path("<str:job_id>/", views.JobDetailView.as_view(), name="job-detail"),
    path("<str:job_id>/events/", views.JobEventsView.as_view(), name="job-events"),
    path("<str:job_id>/result/", views.JobResultView.as_view(), name="job-result"),
    path("<str:job_id>/retry/", views.JobRetryView.as_view(), name="job-retry"),
    path("<str:job_id>/cancel/", views.JobCancelView.as_view(), name="job-cancel"),
]

"""A page that enqueues demo jobs and lists the latest ones."""

from datetime import timedelta

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from asyncjobs.models import Job
from example_project.demo import tasks

ACTIONS = {
    "signup": "Sign-up: welcome email + CRM sync (flaky)",
    "report": "Report with progress (200 rows)",
    "later": "Welcome email in 30 seconds",
    "fail": "A job that always fails (dead letter)",
}


def home(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        action = request.POST.get("action")
        user_id = Job.objects.count() + 1
        with transaction.atomic():  # the jobs commit with whatever else the request writes
            if action == "signup":
                tasks.send_welcome_email.enqueue(user_id)
                tasks.sync_crm.enqueue(user_id)
            elif action == "report":
                tasks.build_report.enqueue(200)
            elif action == "later":
                when = timezone.now() + timedelta(seconds=30)
                tasks.send_welcome_email.using(run_after=when).enqueue(user_id)
            elif action == "fail":
                tasks.always_fails.enqueue("the demo asked for it")
        return redirect("home")
    jobs = Job.objects.order_by("-enqueued_at")[:25]
    return render(request, "demo/home.html", {"jobs": jobs, "actions": ACTIONS})

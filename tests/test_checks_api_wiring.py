"""The system check that the job API is wired as README's quick start says (issue 24, part 5):
routing ``asyncjobs.urls`` without ``EnqueuedByMiddleware`` after ``AuthenticationMiddleware``
leaves the user who enqueued a job with a bare 404 from ``GET /jobs/<id>/``."""

import pytest
from django.core import checks
from django.test import Client

from asyncjobs.checks import check_api_wiring
from asyncjobs.middleware import EnqueuedByMiddleware
from asyncjobs.models import Job

SESSIONS = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
OURS = "asyncjobs.middleware.EnqueuedByMiddleware"


class ProjectMiddleware(EnqueuedByMiddleware):
    """A project's own subclass counts as the middleware."""


def ids(messages):
    return [m.id for m in messages]


def test_the_test_settings_are_wired():
    assert check_api_wiring() == []
    assert "asyncjobs.W030" not in ids(checks.run_checks(tags=[checks.Tags.urls]))


def test_routing_the_api_without_the_middleware_warns(settings):
    settings.MIDDLEWARE = [SESSIONS, AUTH]
    (warning,) = check_api_wiring()
    assert warning.id == "asyncjobs.W030" and warning.level == checks.WARNING
    assert OURS in warning.msg and AUTH in warning.hint
    assert "asyncjobs.W030" in ids(checks.run_checks(tags=[checks.Tags.urls]))


def test_the_middleware_before_authentication_warns(settings):
    settings.MIDDLEWARE = [SESSIONS, OURS, AUTH]
    assert ids(check_api_wiring()) == ["asyncjobs.W031"]
    settings.MIDDLEWARE = [SESSIONS, OURS]
    assert ids(check_api_wiring()) == ["asyncjobs.W031"]


def test_a_subclass_counts(settings):
    settings.MIDDLEWARE = [SESSIONS, AUTH, f"{__name__}.ProjectMiddleware"]
    assert check_api_wiring() == []


@pytest.mark.urls("example_project.demo.urls")
def test_no_api_routed_no_warning(settings):
    settings.MIDDLEWARE = [SESSIONS, AUTH]
    assert check_api_wiring() == []


@pytest.mark.django_db
def test_what_the_warning_is_about(settings, django_user_model):
    """Without the middleware the owner of a job is not recorded: the job API answers 404
    to the very user whose request enqueued it; with it, 200."""
    user = django_user_model.objects.create_user("owner", password="pw")

    def enqueue_and_poll():
        client = Client()  # a client builds its middleware chain once
        client.force_login(user)
        job_id = client.post("/enqueue-for-me/").json()["id"]
        return Job.objects.get(pk=job_id), client.get(f"/jobs/{job_id}/").status_code

    settings.MIDDLEWARE = [SESSIONS, AUTH]
    job, status = enqueue_and_poll()
    assert job.enqueued_by_id is None and status == 404
    settings.MIDDLEWARE = [SESSIONS, AUTH, OURS]
    job, status = enqueue_and_poll()
    assert job.enqueued_by_id == user.pk and status == 200

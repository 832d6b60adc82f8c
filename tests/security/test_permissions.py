"""Who may do what, everywhere: the API, the metrics endpoint, the admin and the command.

Each row of each table is a probe with the status it must answer. The callers:

- ``anonymous``: no session, no token;
- ``other``: a signed-in user who is not the job's owner and has no permission;
- ``owner``: the user the job was enqueued for;
- ``token_header`` / ``token_query``: no session, the job's status token in an
  ``X-Job-Token`` header / in ``?token=``;
- ``staff``: ``is_staff`` without any permission;
- ``staff_view``: staff with ``asyncjobs.view_job``;
- ``staff_cancel``: staff with ``asyncjobs.cancel_job`` only;
- ``superuser``.

The rules: whoever may not read a job gets 404 for it, the same answer as for an id that
does not exist, on every endpoint that names a job (read, events, retry, cancel). Whoever may
read a job but not act on it gets 403. Whoever may act but not read gets the outcome without
the job (``id`` and ``status`` only). Staff rights come from model permissions, never from
``is_staff`` alone. Every path that pauses or resumes a queue needs ``pause_queue`` and
refuses queues that are not configured.
"""

import uuid
from io import StringIO

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from asyncjobs import services
from asyncjobs.exceptions import UnknownQueueError
from asyncjobs.models import Job, JobStatus, QueueState
from asyncjobs.services import enqueued_by
from asyncjobs.tokens import make_token
from tests import tasks

pytestmark = pytest.mark.django_db

CALLERS = (
    "anonymous",
    "other",
    "owner",
    "token_header",
    "token_query",
    "staff",
    "staff_view",
    "staff_cancel",
    "superuser",
)


def table(**expected):
    """One expected status per caller (every caller must be named)."""
    assert set(expected) == set(CALLERS), set(CALLERS) ^ set(expected)
    return list(expected.items())


READ = table(
    anonymous=404,
    other=404,
    owner=200,
    token_header=200,
    token_query=200,
    staff=404,
    staff_view=200,
    staff_cancel=404,
    superuser=200,
)
OPERATORS_ONLY = table(  # list, stats, metrics: view_job
    anonymous=403,
    other=403,
    owner=403,
    token_header=403,
    token_query=403,
    staff=403,
    staff_view=200,
    staff_cancel=403,
    superuser=200,
)
RETRY = table(  # a failed job; retry needs retry_job
    anonymous=404,
    other=404,
    owner=403,
    token_header=403,
    token_query=403,
    staff=404,
    staff_view=403,
    staff_cancel=404,
    superuser=200,
)
CANCEL = table(  # a queued job; cancel needs cancel_job, or to be the owner
    anonymous=404,
    other=404,
    owner=200,
    token_header=403,
    token_query=403,
    staff=404,
    staff_view=403,
    staff_cancel=200,
    superuser=200,
)
PAUSE_API = table(  # pause_queue
    anonymous=403,
    other=403,
    owner=403,
    token_header=403,
    token_query=403,
    staff=403,
    staff_view=403,
    staff_cancel=403,
    superuser=200,
)
# The admin knows no tokens; whoever is not staff is sent to the login page.
PAUSE_ADMIN = table(
    anonymous=302,
    other=302,
    owner=302,
    token_header=302,
    token_query=302,
    staff=403,
    staff_view=403,
    staff_cancel=403,
    superuser=302,  # done, back to the list
)


@pytest.fixture
def people(db):
    def make(name, *, staff=False, superuser=False, perms=()):
        user = User.objects.create_user(
            name, password="pw", is_staff=staff or superuser, is_superuser=superuser
        )
        for codename in perms:
            user.user_permissions.add(Permission.objects.get(codename=codename))
        return User.objects.get(pk=user.pk)  # a fresh permission cache

    return {
        "other": make("other"),
        "owner": make("owner"),
        "staff": make("staff", staff=True),
        "staff_view": make("staff_view", staff=True, perms=("view_job",)),
        "staff_cancel": make("staff_cancel", staff=True, perms=("cancel_job",)),
        "superuser": make("superuser", superuser=True),
    }


@pytest.fixture
def failed_job(people, runner):
    with enqueued_by(people["owner"]):
        result = tasks.fail_always.using(max_attempts=1).enqueue("the owner's secret")
    runner().drain()
    job = Job.objects.get(pk=result.id)
    assert job.status == JobStatus.FAILED
    return job


@pytest.fixture
def queued_job(people):
    with enqueued_by(people["owner"]):
        result = tasks.add.enqueue(1, 2)
    return Job.objects.get(pk=result.id)


def request(people, who, method, url, *, job_id=None):
    """``method`` on ``url`` as ``who``, with a session (not DRF's forced authentication, so
    that plain Django views and the admin see the same user) or with the status token of
    ``job_id``."""
    client = APIClient()
    extra = {}
    if who in people:
        client.force_login(people[who])
    elif who == "token_header":
        extra["HTTP_X_JOB_TOKEN"] = make_token(job_id)
    elif who == "token_query":
        url += ("&" if "?" in url else "?") + f"token={make_token(job_id)}"
    response = getattr(client, method)(url, **extra)
    if response.streaming:
        b"".join(response.streaming_content)  # to its end, which closes it
    return response


# --- jobs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "expected"), READ)
def test_detail(people, failed_job, who, expected):
    response = request(people, who, "get", f"/jobs/{failed_job.pk}/", job_id=failed_job.pk)
    assert response.status_code == expected
    if expected == 200:
        history = response.json()["history"]
        shows_traceback = who in ("staff_view", "superuser")
        assert (history[0]["traceback"] is not None) is shows_traceback


@pytest.mark.parametrize(("who", "expected"), READ)
def test_events(people, failed_job, who, expected):
    url = f"/jobs/{failed_job.pk}/events/"
    assert request(people, who, "get", url, job_id=failed_job.pk).status_code == expected


@pytest.mark.parametrize(("who", "expected"), RETRY)
def test_retry(people, failed_job, who, expected):
    url = f"/jobs/{failed_job.pk}/retry/"
    response = request(people, who, "post", url, job_id=failed_job.pk)
    assert response.status_code == expected
    status = Job.objects.get(pk=failed_job.pk).status
    assert status == (JobStatus.QUEUED if expected == 200 else JobStatus.FAILED)
    if expected != 200:
        assert "secret" not in response.content.decode()


@pytest.mark.parametrize(("who", "expected"), CANCEL)
def test_cancel(people, queued_job, who, expected):
    url = f"/jobs/{queued_job.pk}/cancel/"
    response = request(people, who, "post", url, job_id=queued_job.pk)
    assert response.status_code == expected
    status = Job.objects.get(pk=queued_job.pk).status
    assert status == (JobStatus.CANCELLED if expected == 200 else JobStatus.QUEUED)


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize("action", ["", "events/", "retry/", "cancel/"])
def test_a_job_that_does_not_exist_is_404_for_everyone(people, who, action):
    job_id = uuid.uuid4()
    method = "post" if action in ("retry/", "cancel/") else "get"
    response = request(people, who, method, f"/jobs/{job_id}/{action}", job_id=job_id)
    assert response.status_code == 404


def test_acting_without_the_right_to_read_shows_no_job(people, failed_job):
    """Cancel (or retry) rights without the right to read: the outcome, not the job."""
    response = request(people, "staff_cancel", "post", f"/jobs/{failed_job.pk}/cancel/")
    assert response.status_code == 409  # it already failed
    assert set(response.json()) == {"detail"}
    assert "secret" not in response.content.decode()
    retrier = User.objects.create_user("retrier", password="pw", is_staff=True)
    retrier.user_permissions.add(Permission.objects.get(codename="retry_job"))
    people["retrier"] = User.objects.get(pk=retrier.pk)
    response = request(people, "retrier", "post", f"/jobs/{failed_job.pk}/retry/")
    assert response.status_code == 200
    assert response.json() == {"id": str(failed_job.pk), "status": "queued"}
    response = request(people, "staff_cancel", "post", f"/jobs/{failed_job.pk}/cancel/")
    assert response.json() == {"id": str(failed_job.pk), "status": "cancelled"}


def test_acting_with_the_right_to_read_shows_the_job(people, queued_job):
    response = request(people, "owner", "post", f"/jobs/{queued_job.pk}/cancel/")
    assert response.status_code == 200
    assert {"last_error", "history", "task"} <= set(response.json())


# --- staff pages of the API, and the metrics ---------------------------------------------------


@pytest.mark.parametrize(("who", "expected"), OPERATORS_ONLY)
@pytest.mark.parametrize("url", ["/jobs/", "/jobs/stats/", "/metrics/"])
def test_list_stats_and_metrics(people, queued_job, url, who, expected):
    assert request(people, who, "get", url, job_id=queued_job.pk).status_code == expected


# --- pausing queues ----------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "expected"), PAUSE_API)
def test_pause_and_resume_through_the_api(people, queued_job, who, expected):
    response = request(people, who, "post", "/jobs/queues/emails/pause/", job_id=queued_job.pk)
    assert response.status_code == expected
    assert QueueState.objects.filter(pk="emails", paused=True).exists() is (expected == 200)
    response = request(people, who, "post", "/jobs/queues/emails/resume/", job_id=queued_job.pk)
    assert response.status_code == expected
    assert not QueueState.objects.filter(pk="emails", paused=True).exists()


def test_the_api_refuses_unknown_queues(people):
    response = request(people, "superuser", "post", "/jobs/queues/nope/pause/")
    assert response.status_code == 400
    assert "nope" in response.json()["detail"]
    assert not QueueState.objects.filter(pk="nope").exists()


@pytest.mark.parametrize(("who", "expected"), PAUSE_ADMIN)
@pytest.mark.parametrize("action", ["pause", "resume"])
def test_pause_and_resume_through_admin_actions(people, queued_job, who, expected, action):
    services.set_queue_paused("emails", action == "resume", now=timezone.now())
    client = APIClient()
    if who in people:
        client.force_login(people[who])
    data = {"action": action, "_selected_action": ["emails"]}
    response = client.post("/admin/asyncjobs/queuestate/", data)
    assert response.status_code == expected
    paused = QueueState.objects.get(pk="emails").paused
    assert paused is ((action == "pause") is (who == "superuser"))


def staff_with(*codenames):
    user = User.objects.create_user(f"staff-{'-'.join(codenames)}", password="pw", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = APIClient()
    client.force_login(user)
    return client


MODEL_PERMISSIONS = ("view_queuestate", "add_queuestate", "change_queuestate", "delete_queuestate")


def test_ordinary_model_permissions_do_not_pause_in_the_admin():
    """The admin's add, change and delete of queue rows pause and resume queues: with every
    model permission but ``pause_queue``, each is refused and nothing changes."""
    services.set_queue_paused("emails", True, now=timezone.now())
    client = staff_with(*MODEL_PERMISSIONS)
    assert client.get("/admin/asyncjobs/queuestate/").status_code == 200  # may look
    assert client.get("/admin/asyncjobs/queuestate/add/").status_code == 403
    add = {"name": "low", "paused": "on"}
    assert client.post("/admin/asyncjobs/queuestate/add/", add).status_code == 403
    change = "/admin/asyncjobs/queuestate/emails/change/"
    assert client.post(change, {"name": "emails"}).status_code == 403  # unticks "paused"
    delete = "/admin/asyncjobs/queuestate/emails/delete/"
    assert client.post(delete, {"post": "yes"}).status_code == 403
    bulk = {"action": "delete_selected", "_selected_action": ["emails"], "post": "yes"}
    client.post("/admin/asyncjobs/queuestate/", bulk)
    assert list(QueueState.objects.values_list("name", "paused")) == [("emails", True)]


def test_pause_queue_pauses_and_resumes_in_the_admin_and_refuses_unknown_queues():
    client = staff_with("pause_queue")
    assert client.get("/admin/asyncjobs/queuestate/add/").status_code == 200
    response = client.post("/admin/asyncjobs/queuestate/add/", {"name": "nope", "paused": "on"})
    assert response.status_code == 200  # the form again, with the error
    assert b"Unknown queue" in response.content
    assert not QueueState.objects.filter(pk="nope").exists()
    response = client.post("/admin/asyncjobs/queuestate/add/", {"name": "low", "paused": "on"})
    assert response.status_code == 302
    assert QueueState.objects.get(pk="low").paused
    change = "/admin/asyncjobs/queuestate/low/change/"
    assert client.post(change, {"paused": ""}).status_code == 302
    assert not QueueState.objects.get(pk="low").paused
    # The name of an existing row cannot be edited into another queue's row.
    assert client.post(change, {"name": "nope", "paused": "on"}).status_code == 302
    assert set(QueueState.objects.values_list("name", "paused")) == {("low", True)}
    # Deleting a row would resume its queue behind the operator's back: resume it instead.
    delete = "/admin/asyncjobs/queuestate/low/delete/"
    assert client.post(delete, {"post": "yes"}).status_code == 403


def test_the_command_uses_the_same_service_and_refuses_unknown_queues():
    """The command is the operator's shell (no user to check); it pauses through the same
    service, which refuses unknown queues for every caller."""
    call_command("jobqueue", "pause", "low", stdout=StringIO())
    assert QueueState.objects.get(pk="low").paused
    with pytest.raises(CommandError, match="Unknown queue 'nope'"):
        call_command("jobqueue", "pause", "nope", stdout=StringIO())
    assert not QueueState.objects.filter(pk="nope").exists()
    call_command("jobqueue", "resume", "low", stdout=StringIO())
    assert not QueueState.objects.get(pk="low").paused


def test_the_service_checks_the_user_and_the_queue(people):
    now = timezone.now()
    with pytest.raises(UnknownQueueError):
        services.set_queue_paused("nope", True, now=now)
    with pytest.raises(PermissionDenied):
        services.set_queue_paused("low", True, now=now, user=people["staff_view"])
    services.set_queue_paused("low", True, now=now, user=people["superuser"])
    assert services.paused_queues() == {"low"}


def test_a_queue_removed_from_the_settings_can_still_be_resumed(settings):
    """A paused queue that is no longer configured can be resumed (never paused again)."""
    services.set_queue_paused("low", True, now=timezone.now())
    settings.TASKS = {
        "default": {**settings.TASKS["default"], "QUEUES": ["default", "emails"]},
    }
    services.set_queue_paused("low", False, now=timezone.now())
    with pytest.raises(UnknownQueueError):
        services.set_queue_paused("low", True, now=timezone.now())


def test_the_status_token_travels_in_a_header(api, users):
    """``POST /jobs/`` hands out the token alone too, for the ``X-Job-Token`` header (query
    strings end up in access logs); a header wins over a stale ``?token=``."""
    response = api(users["client"]).post(
        "/jobs/", {"callback_url": "http://127.0.0.1:9/hook", "payload": {}}, format="json"
    )
    assert response.status_code == 202
    job_id, token = response.json()["id"], response.json()["status_token"]
    anonymous = APIClient()
    assert anonymous.get(f"/jobs/{job_id}/", HTTP_X_JOB_TOKEN=token).status_code == 200
    stale = make_token(uuid.uuid4())
    url = f"/jobs/{job_id}/?token={stale}"
    assert anonymous.get(url, HTTP_X_JOB_TOKEN=token).status_code == 200
    assert anonymous.get(url).status_code == 404
    assert anonymous.get(f"/jobs/{job_id}/?token={token}").status_code == 200  # still works

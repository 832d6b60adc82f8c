"""The admin pages that exist so far: read-only jobs, workers, schedules; queue pausing."""

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from asyncjobs.models import Job, QueueState
from asyncjobs.services import set_queue_paused
from tests import tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = User.objects.create_user("boss", password="pw", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def test_job_pages_render_and_are_read_only(admin_client, runner):
    result = tasks.fail_always.using(max_attempts=1).enqueue("visible in the admin")
    runner().drain()
    changelist = admin_client.get("/admin/asyncjobs/job/")
    assert changelist.status_code == 200
    assert b"tests.tasks.fail_always" in changelist.content
    page = admin_client.get(f"/admin/asyncjobs/job/{result.id}/change/")
    assert page.status_code == 200
    assert b"visible in the admin" in page.content
    assert admin_client.get("/admin/asyncjobs/job/add/").status_code == 403
    for path in ("worker", "schedule", "scheduletick", "queuestate"):
        assert admin_client.get(f"/admin/asyncjobs/{path}/").status_code == 200


def test_pause_action_needs_the_permission(client, admin_client):
    set_queue_paused("emails", False, now=timezone.now())
    data = {"action": "pause", "_selected_action": ["emails"]}
    response = admin_client.post("/admin/asyncjobs/queuestate/", data, follow=True)
    assert b"Paused 1 queue" in response.content
    assert QueueState.objects.get(pk="emails").paused
    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_queuestate"))
    client.force_login(clerk)
    data = {"action": "resume", "_selected_action": ["emails"]}
    response = client.post("/admin/asyncjobs/queuestate/", data, follow=True)
    assert QueueState.objects.get(pk="emails").paused  # not allowed: nothing changed
    assert b"Resume selected queues" not in response.content


def staff_with(*codenames):
    user = User.objects.create_user(
        f"staff-{'-'.join(codenames) or 'none'}", password="pw", is_staff=True
    )
    for codename in ("view_job", *codenames):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return User.objects.get(pk=user.pk)


def act(client, action, ids, follow=True):
    data = {"action": action, "_selected_action": [str(i) for i in ids]}
    return client.post("/admin/asyncjobs/job/", data, follow=follow)


def test_changelist_columns_filters_and_search(admin_client):
    result = tasks.add.enqueue(1, 2)
    page = admin_client.get("/admin/asyncjobs/job/", {"status__exact": "queued"})
    assert page.status_code == 200
    assert str(result.id)[:8].encode() in page.content
    assert b"border-radius" in page.content  # the status badge
    assert b"Dead letter" in page.content
    assert admin_client.get("/admin/asyncjobs/job/", {"q": result.id}).status_code == 200
    assert admin_client.get("/admin/asyncjobs/job/", {"q": "not-a-uuid"}).status_code == 200
    assert admin_client.get("/admin/asyncjobs/job/", {"task": "tests.tasks.add"}).status_code == 200


def test_retry_action_needs_its_permission_and_reports_skips(client, runner):
    failed = tasks.fail_always.using(max_attempts=1).enqueue()
    queued = tasks.add.enqueue(1, 1)
    runner(queues=["default"]).drain()
    still_queued = tasks.add.using(run_after=timezone.now() + timezone.timedelta(hours=1)).enqueue(
        1, 1
    )
    client.force_login(staff_with("change_job"))
    page = client.get("/admin/asyncjobs/job/")
    assert b"retry_selected" not in page.content
    act(client, "retry_selected", [failed.id])
    assert Job.objects.get(pk=failed.id).status == "failed"
    client.force_login(staff_with("retry_job"))
    response = act(client, "retry_selected", [failed.id, queued.id, still_queued.id])
    text = response.content.decode()
    assert "Queued again 1 job(s)." in text
    assert "Skipped 2 job(s): only failed or cancelled jobs can be retried" in text
    assert Job.objects.get(pk=failed.id).status == "queued"


def test_cancel_and_run_now_actions(client):
    waiting = tasks.add.using(run_after=timezone.now() + timezone.timedelta(hours=1)).enqueue(1, 1)
    other = tasks.add.using(run_after=timezone.now() + timezone.timedelta(hours=1)).enqueue(2, 2)
    client.force_login(staff_with("run_job_now"))
    assert "Made ready 1 job(s)." in act(client, "run_now", [waiting.id]).content.decode()
    assert Job.objects.get(pk=waiting.id).status == "queued"
    act(client, "cancel_selected", [other.id])  # no cancel permission: nothing happens
    assert Job.objects.get(pk=other.id).status == "scheduled"
    client.force_login(staff_with("cancel_job"))
    assert (
        "Cancelled (or asked to stop) 2"
        in act(client, "cancel_selected", [waiting.id, other.id]).content.decode()
    )
    assert set(Job.objects.values_list("status", flat=True)) == {"cancelled"}


def test_delete_needs_the_delete_permission(client, runner):
    result = tasks.add.enqueue(1, 1)
    client.force_login(staff_with())
    act(client, "delete_selected", [result.id])
    assert Job.objects.filter(pk=result.id).exists()


def test_actions_are_csrf_protected(runner):
    from django.test import Client

    failed = tasks.fail_always.using(max_attempts=1).enqueue()
    runner().drain()
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_with("retry_job"))
    response = act(client, "retry_selected", [failed.id], follow=False)
    assert response.status_code == 403
    assert Job.objects.get(pk=failed.id).status == "failed"


def test_dead_letter_groups_and_group_actions(client, runner):
    for message in ("a", "b", "c"):
        tasks.fail_always.using(max_attempts=1).enqueue(message)
    tasks.fail_fast.enqueue()
    runner().drain()
    client.force_login(staff_with("retry_job", "delete_job"))
    page = client.get("/admin/asyncjobs/job/dead-letter/")
    assert page.status_code == 200
    groups = page.context["groups"]
    assert [(g["task_path"], g["last_error_class"], g["count"]) for g in groups] == [
        ("tests.tasks.fail_always", "builtins.ValueError", 3),
        ("tests.tasks.fail_fast", "builtins.KeyError", 1),
    ]
    assert groups[0]["latest_message"] in {"a", "b", "c"}
    body = {
        "op": "retry",
        "task_path": "tests.tasks.fail_always",
        "error_class": "builtins.ValueError",
    }
    confirm = client.post("/admin/asyncjobs/job/dead-letter/", body)
    assert b"all <strong>3</strong> failed job(s)" in confirm.content
    assert Job.objects.filter(status="failed").count() == 4  # nothing before confirming
    client.post("/admin/asyncjobs/job/dead-letter/", {**body, "confirm": "yes"})
    assert Job.objects.filter(status="queued").count() == 3
    discard = {
        "op": "discard",
        "task_path": "tests.tasks.fail_fast",
        "error_class": "builtins.KeyError",
        "confirm": "yes",
    }
    client.post("/admin/asyncjobs/job/dead-letter/", discard)
    assert not Job.objects.filter(task_path="tests.tasks.fail_fast").exists()


def test_dead_letter_group_actions_need_permissions(client, runner):
    tasks.fail_fast.enqueue()
    runner().drain()
    client.force_login(staff_with())
    page = client.get("/admin/asyncjobs/job/dead-letter/")
    assert b">Retry all</button>" not in page.content
    assert b">Discard all</button>" not in page.content
    body = {
        "op": "discard",
        "task_path": "tests.tasks.fail_fast",
        "error_class": "builtins.KeyError",
        "confirm": "yes",
    }
    assert client.post("/admin/asyncjobs/job/dead-letter/", body).status_code == 403
    assert Job.objects.filter(status="failed").count() == 1


def test_workers_page_marks_stale_workers_and_jobs_in_hand(admin_client, runner, worker_row):

    now = timezone.now()
    worker_row("fresh")
    worker_row("stale", pid=2, heartbeat_age=timezone.timedelta(minutes=5))
    tasks.add.enqueue(1, 1)
    runner().strategy.claim(
        queues=None, limit=1, worker_id="fresh", now=now, lease=timezone.timedelta(seconds=60)
    )
    page = admin_client.get("/admin/asyncjobs/worker/")
    text = page.content.decode()
    assert "stale (300s)" in text
    assert page.context["cl"].result_list.get(pk="fresh").in_hand == 1


def test_dashboard_shows_queues_lag_dead_letter_throughput_and_workers(
    admin_client, runner, worker_row
):

    now = timezone.now()
    tasks.add.using(run_after=now - timezone.timedelta(seconds=90)).enqueue(1, 1)
    tasks.fail_always.using(max_attempts=1, queue_name="low").enqueue()
    tasks.add.using(queue_name="low").enqueue(2, 2)
    runner(queues=["low"]).drain()
    worker_row("w", hostname="box", pid=7, concurrency=4)
    index = admin_client.get("/admin/")
    assert b"/admin/asyncjobs/dashboard/" in index.content
    page = admin_client.get("/admin/asyncjobs/dashboard/")
    assert page.status_code == 200
    queues = {q.name: q for q in page.context["snap"].queues}
    assert queues["default"].queued == 1 and queues["default"].lag_seconds >= 90
    assert queues["low"].failed == 1 and queues["low"].succeeded_last_hour == 1
    assert page.context["finished_last_hour"] == 2
    text = page.content.decode()
    assert "<svg" in text and 'id="throughput-chart"' in text
    assert "box / 7" in text and "healthy" in text
    assert "setInterval(refresh" in text
    fragment = admin_client.get("/admin/asyncjobs/dashboard/", {"fragment": 1})
    assert b"<svg" in fragment.content and b"<html" not in fragment.content


def test_dashboard_needs_view_permission(client):
    client.force_login(User.objects.create_user("nobody", password="pw", is_staff=True))
    assert client.get("/admin/asyncjobs/dashboard/").status_code == 403


def test_prometheus_metrics(client, settings, runner):
    tasks.add.enqueue(1, 1)
    tasks.fail_always.using(max_attempts=1, queue_name="low").enqueue()
    runner(queues=["low"]).drain()
    assert client.get("/metrics/").status_code == 403
    assert client.get("/metrics/", HTTP_AUTHORIZATION="Bearer x").status_code == 403
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "METRICS_TOKEN": "scrape-me"}
    response = client.get("/metrics/", HTTP_AUTHORIZATION="Bearer scrape-me")
    assert response.status_code == 200
    text = response.content.decode()
    assert 'asyncjobs_jobs{queue="default",status="queued"} 1.0' in text
    assert 'asyncjobs_dead_letter_jobs{queue="low"} 1.0' in text
    assert 'asyncjobs_attempts_recent{outcome="failed"} 1.0' in text
    assert "asyncjobs_attempt_duration_seconds_count 1.0" in text
    assert "asyncjobs_queue_lag_seconds" in text
    ops = User.objects.create_user("ops", password="pw", is_staff=True)
    client.force_login(ops)
    assert client.get("/metrics/").status_code == 403  # is_staff alone: no
    ops.user_permissions.add(Permission.objects.get(codename="view_job"))
    assert client.get("/metrics/").status_code == 200

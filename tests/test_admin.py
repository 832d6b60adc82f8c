"""The admin pages that exist so far: read-only jobs, workers, schedules; queue pausing."""

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from asyncjobs.models import QueueState
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

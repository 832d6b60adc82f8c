"""The batch pages of the admin: the list (state, bar, counts), the batch page (its jobs by
status, links into the job list filtered by batch), "retry all failed" and "cancel the rest"
through the services with their permissions, the dashboard's batches, the job list's batch
filter and column."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from asyncjobs import batch, services
from asyncjobs.models import Batch, BatchState, Job, JobStatus
from asyncjobs.services import bulk
from asyncjobs.testing import work_off
from tests import batch_tasks as t
from tests.batches import make_batch

pytestmark = pytest.mark.django_db

Q, R, S, F, C = (
    JobStatus.QUEUED,
    JobStatus.RUNNING,
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)


def staff(client, *codenames, name=None):
    user = User.objects.create_user(
        name or f"staff-{'-'.join(codenames) or 'none'}", password="pw", is_staff=True
    )
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(User.objects.get(pk=user.pk))
    return client


@pytest.fixture
def boss(client):
    user = User.objects.create_user("boss", password="pw", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def page(batch_id):
    return f"/admin/asyncjobs/batch/{batch_id}/change/"


def operate(batch_id, op):
    return f"/admin/asyncjobs/batch/{batch_id}/{op}/"


def half_failed(n=4):
    """A real batch of ``n`` jobs, every other one failing for good, worked off."""
    with batch(description="half broken") as b:
        for i in range(n):
            b.enqueue(t.broken if i % 2 else t.piece, i)
    work_off()
    return Batch.objects.get(pk=b.id)


def test_the_list_shows_state_bar_and_counts(boss):
    running = make_batch(statuses=[S, F, Q, Q], description="nightly import")
    done = make_batch(statuses=[S, S], description="all good")
    response = boss.get("/admin/asyncjobs/batch/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "nightly import" in body and "all good" in body
    assert 'role="progressbar"' in body and 'aria-valuenow="50"' in body
    assert "asyncjobs-bar-failed" in body
    for state, shown, hidden in (
        ("running", running, done),
        ("succeeded", done, running),
        ("failed", None, running),
        ("open", None, done),
    ):
        listed = boss.get("/admin/asyncjobs/batch/", {"state": state}).content.decode()
        if shown is not None:
            assert shown.description in listed
        assert hidden.description not in listed
    found = boss.get("/admin/asyncjobs/batch/", {"q": str(running.pk)}).content.decode()
    assert "nightly import" in found and "all good" not in found
    for term in ("not-a-uuid", "'; DROP TABLE x; --", "\x00", "é" * 300):
        assert boss.get("/admin/asyncjobs/batch/", {"q": term}).status_code == 200
    assert boss.get("/admin/asyncjobs/batch/", {"state": "bogus"}).status_code == 200


def test_batches_are_read_only(boss):
    made = make_batch(statuses=[S])
    assert boss.get("/admin/asyncjobs/batch/add/").status_code == 403
    response = boss.post(page(made.pk), {"total": 99, "succeeded": 99})
    assert response.status_code == 403
    assert (
        boss.post(f"/admin/asyncjobs/batch/{made.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    made.refresh_from_db()
    assert (made.total, made.succeeded) == (1, 1)
    assert b'name="total"' not in boss.get(page(made.pk)).content


def test_the_batch_page_counts_jobs_by_status_and_links_to_them(boss):
    made = make_batch(statuses=[S, S, F, C, R, Q, Q], description="report chunks")
    other = make_batch(statuses=[Q, Q, Q])
    response = boss.get(page(made.pk))
    assert response.status_code == 200
    rows = {r["status"]: r["count"] for r in response.context["status_rows"]}
    assert rows == {
        "waiting": 0,
        "scheduled": 0,
        "queued": 2,
        "running": 1,
        "succeeded": 2,
        "failed": 1,
        "cancelled": 1,
    }
    body = response.content.decode()
    assert 'id="batch-progress"' in body
    assert "4 of 7 jobs finished" in body
    link = f"/admin/asyncjobs/job/?batch={made.pk}&amp;status__exact=queued"
    assert link in body
    listed = boss.get("/admin/asyncjobs/job/", {"batch": str(made.pk), "status__exact": "queued"})
    assert listed.status_code == 200
    ids = {str(j.pk) for j in listed.context["cl"].result_list}
    assert ids == {str(pk) for pk in made.jobs.filter(status=Q).values_list("pk", flat=True)}
    everything = boss.get("/admin/asyncjobs/job/", {"batch": str(made.pk)})
    assert len(everything.context["cl"].result_list) == 7
    assert not set(other.jobs.values_list("pk", flat=True)) & {
        j.pk for j in everything.context["cl"].result_list
    }


@pytest.mark.parametrize(
    "value", ["nope", "1", "' OR 1=1 --", "29f97238-b6bb-462d-aa0f-00182b9c3ffb"]
)
def test_the_job_lists_batch_filter_takes_any_value_without_error(boss, value):
    make_batch(statuses=[Q])
    response = boss.get("/admin/asyncjobs/job/", {"batch": value})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


def test_a_job_shows_its_batch_in_the_list_and_on_its_page(boss):
    made = make_batch(statuses=[Q])
    job = made.jobs.get()
    short = str(made.pk)[:8]
    listed = boss.get("/admin/asyncjobs/job/").content.decode()
    assert f'class="asyncjobs-batch-mark" title="batch {made.pk}"' in listed
    body = boss.get(f"/admin/asyncjobs/job/{job.pk}/change/").content.decode()
    assert page(made.pk) in body and short in body


@pytest.mark.parametrize("bad", ["nope", "29f97238-b6bb-462d-aa0f-00182b9c3ffb"])
def test_an_unknown_batch_page_is_not_an_error(boss, bad):
    assert boss.get(page(bad)).status_code in (302, 404)  # the admin's "doesn't exist"
    assert boss.get(operate(bad, "retry-failed")).status_code in (302, 404)


def test_retry_all_failed_goes_through_the_service_and_reopens_the_batch(boss):
    made = half_failed(4)
    assert (made.state, made.failed, made.succeeded) == (BatchState.FAILED, 2, 2)
    body = boss.get(page(made.pk)).content.decode()
    assert "Retry all failed (2)" in body and "Cancel the rest" not in body
    confirm = boss.get(operate(made.pk, "retry-failed"))
    assert confirm.status_code == 200 and b"Queue again the <b>2</b>" in confirm.content
    assert Batch.objects.get(pk=made.pk).failed == 2  # a GET changes nothing
    done = boss.post(operate(made.pk, "retry-failed"), {"confirm": "yes"}, follow=True)
    assert "Queued again 2 failed job(s) of 1 batch(es)." in done.content.decode()
    made.refresh_from_db()
    assert (made.state, made.pending, made.failed, made.finished_at) == (
        BatchState.RUNNING,
        2,
        0,
        None,
    )
    assert made.jobs.filter(status=Q).count() == 2


def test_cancel_the_rest_goes_through_the_service_and_finishes_the_batch(boss):
    with batch(description="to be cancelled") as b:
        b.enqueue_many([(t.piece, [n], {}) for n in range(5)])
    Job.objects.filter(pk=Job.objects.filter(batch_id=b.id).first().pk).update(status=R)
    body = boss.get(page(b.id)).content.decode()
    assert "Cancel the rest (5)" in body and "Retry all failed" not in body
    done = boss.post(operate(b.id, "cancel-rest"), {"confirm": "yes"}, follow=True)
    assert "Cancelled 4 job(s); asked 1 running job(s) to stop." in done.content.decode()
    made = Batch.objects.get(pk=b.id)
    assert (made.cancelled, made.pending, made.state) == (4, 1, BatchState.RUNNING)
    running = Job.objects.get(batch_id=b.id, status=R)
    assert running.cancel_requested_at is not None


def test_cancel_the_rest_of_a_big_batch_is_handed_to_a_job(boss, monkeypatch):
    monkeypatch.setattr(bulk, "CANCEL_INLINE_LIMIT", 3)
    monkeypatch.setattr(bulk, "CANCEL_CHUNK", 2)
    later = t.piece.using(run_after=timezone.now() + timedelta(hours=1))  # only it runs
    with batch(on_complete=t.completed) as b:
        b.enqueue_many([(later, [n], {}) for n in range(8)])
    confirm = boss.get(operate(b.id, "cancel-rest")).content.decode()
    assert "Up to 3 are cancelled at once" in confirm
    done = boss.post(operate(b.id, "cancel-rest"), {"confirm": "yes"}, follow=True)
    body = done.content.decode()
    assert "Cancelled 3 job(s); asked 0 running job(s) to stop." in body
    assert "A job cancels the rest, 2 at a time" in body
    canceller = Job.objects.get(task_path=services.CANCEL_BATCH_TASK)
    assert f"/admin/asyncjobs/job/{canceller.pk}/change/" in body
    assert 'id="batch-cancelling"' in body  # the batch page, after the redirect
    # A second click while it waits hands over to the same job.
    boss.post(operate(b.id, "cancel-rest"), {"confirm": "yes"})
    assert Job.objects.filter(task_path=services.CANCEL_BATCH_TASK).count() == 1
    work_off()
    made = Batch.objects.get(pk=b.id)
    assert (made.cancelled, made.pending, made.state) == (8, 0, BatchState.FAILED)
    assert Job.objects.filter(task_path="tests.batch_tasks.completed").count() == 1
    # The second click cancelled 3 more itself; the job, the last 2.
    assert Job.objects.get(pk=canceller.pk).return_value == {"cancelled": 2, "asked": 0}
    assert 'id="batch-cancelling"' not in boss.get(page(b.id)).content.decode()


def test_the_list_actions_do_the_same(boss):
    failed = half_failed(2)
    with batch() as waiting:
        waiting.enqueue(t.piece, 1)
    selected = [str(failed.pk), str(waiting.id)]
    data = {"action": "retry_failed_selected", "_selected_action": selected}
    response = boss.post("/admin/asyncjobs/batch/", data, follow=True)
    assert "Queued again 1 failed job(s) of 2 batch(es)." in response.content.decode()
    data = {"action": "cancel_rest_selected", "_selected_action": selected}
    response = boss.post("/admin/asyncjobs/batch/", data, follow=True)
    assert "Cancelled 2 job(s)" in response.content.decode()
    assert Batch.objects.get(pk=waiting.id).state == BatchState.FAILED


def test_reading_needs_view_job(client):
    made = make_batch(statuses=[F])
    staff(client)  # is_staff, no permission
    assert client.get("/admin/asyncjobs/batch/").status_code == 403
    assert client.get(page(made.pk)).status_code == 403
    assert client.get(operate(made.pk, "retry-failed")).status_code == 403
    staff(client, "view_batch", name="model-view-only")  # the model's own: not enough
    assert client.get(page(made.pk)).status_code == 403
    staff(client, "view_job", name="reader")
    assert client.get(page(made.pk)).status_code == 200


@pytest.mark.parametrize(
    ("codenames", "op", "allowed"),
    [
        (("view_job",), "retry-failed", False),
        (("view_job",), "cancel-rest", False),
        (("view_job", "cancel_job"), "retry-failed", False),
        (("view_job", "retry_job"), "cancel-rest", False),
        (("view_job", "retry_job"), "retry-failed", True),
        (("view_job", "cancel_job"), "cancel-rest", True),
        (("retry_job", "cancel_job"), "retry-failed", False),  # may not even see it
    ],
)
def test_each_operation_needs_its_permission(client, codenames, op, allowed):
    made = half_failed(2)
    with batch() as waiting:
        waiting.enqueue(t.piece, 1)
    staff(client, *codenames)
    target = made.pk if op == "retry-failed" else waiting.id
    if "view_job" in codenames:  # the page offers the button to those allowed only
        body = client.get(page(target)).content.decode()
        assert (f'id="{op}"' in body) is allowed
    before = Batch.objects.get(pk=target)
    response = client.post(operate(target, op), {"confirm": "yes"})
    assert response.status_code == (302 if allowed else 403)
    after = Batch.objects.get(pk=target)
    assert (after.pending != before.pending) is allowed


def test_operations_are_posts_with_csrf(boss):
    from django.test import Client

    made = half_failed(2)
    user = User.objects.get(username="boss")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post(operate(made.pk, "retry-failed"), {"confirm": "yes"}).status_code == 403
    assert boss.post(operate(made.pk, "bogus"), {"confirm": "yes"}).status_code in (302, 404)
    assert boss.post(operate(made.pk, "retry-failed")).status_code == 200  # the confirmation
    assert Batch.objects.get(pk=made.pk).failed == 1


def test_the_dashboard_shows_open_and_recent_batches_with_bars(boss):
    running = make_batch(statuses=[S, Q], description="still going")
    finished = make_batch(statuses=[S, F], description="just done")
    old = make_batch(statuses=[S], description="long ago")
    Batch.objects.filter(pk=old.pk).update(finished_at=old.created_at.replace(year=2020))
    response = boss.get("/admin/asyncjobs/dashboard/", {"fragment": 1})
    body = response.content.decode()
    assert 'id="batches"' in body
    assert "still going" in body and "just done" in body and "long ago" not in body
    assert f'data-batch="{running.pk}"' in body and f'data-batch="{finished.pk}"' in body
    assert 'role="progressbar"' in body
    assert page(running.pk) in body

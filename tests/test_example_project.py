"""The example project's scenarios, through their pages, with the jobs run in-process
(``work_off``) against a live server for the fake CRM and partner API."""

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from asyncjobs import cancel_job
from asyncjobs.models import Batch, Job, JobStatus
from asyncjobs.testing import assert_enqueued, assert_not_enqueued, enqueued_jobs, work_off
from asyncjobs.tokens import make_token
from example_project.demo import tasks
from example_project.demo.models import AnalyticsEvent, Order, PartnerCall, Product, Profile

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def demo(settings, live_server, tmp_path):
    """The demo's fake services answer at the live server; media goes to a temp dir."""
    settings.DEMO_BASE_URL = live_server.url
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return settings


def test_signup_in_the_background_answers_and_enqueues_the_fan_out(client, demo):
    response = client.post(
        reverse("demo:signup"), {"username": "ada", "email": "ada@example.com"}, follow=True
    )
    assert response.status_code == 200
    user = User.objects.get(username="ada")
    for task in tasks.SIGNUP_TASKS:
        assert_enqueued(task, args=[user.pk], count=1)
    assert b"background jobs" in response.content
    assert len(response.context["jobs"]) == 5  # the page follows each job live
    assert all("token=" in job["status_url"] for job in response.context["jobs"])
    fan_out = Batch.objects.get()
    assert set(Job.objects.filter(batch=fan_out).values_list("enqueued_by", flat=True)) == {None}
    assert response.context["batch_url"].startswith(f"/jobs/batches/{fan_out.pk}/?token=")
    assert b'id="all-done"' in response.content
    assert client.get(response.context["batch_url"]).json()["state"] == "running"

    done = work_off()
    assert (done.succeeded, done.failed) == (6, 0)  # the five, then on_complete
    body = client.get(response.context["batch_url"]).json()
    assert (body["state"], body["counts"]["succeeded"]) == ("succeeded", 5)
    event = AnalyticsEvent.objects.get(name="signup_complete")
    assert event.payload["batch"] == str(fan_out.pk) and event.payload["succeeded"] == 5
    tasks.signup_complete.call(str(fan_out.pk), {"succeeded": 5})  # again: still one event
    assert AnalyticsEvent.objects.filter(name="signup_complete").count() == 1
    profile = Profile.objects.get(user=user)
    assert profile.provisioned_at is not None
    assert profile.crm_id.startswith("crm-")
    with Image.open(f"{demo.MEDIA_ROOT}/{profile.avatar}") as avatar:
        assert avatar.size == (256, 256)
    assert sorted(m.subject for m in mail.outbox) == ["New sign-up: ada", "Welcome to the demo!"]


def test_a_flaky_crm_is_retried_with_backoff(client, demo):
    demo.DEMO_CRM_FAILURE_RATE = 1.0
    client.post(reverse("demo:signup"), {"username": "bob", "email": "bob@example.com"})
    # One fixed clock for the whole pass: the jittered backoff can draw a delay shorter than
    # the pass itself, and the retry must not come due (and fail again) within it.
    now = timezone.now()
    work_off(now=now)
    crm = Job.objects.get(task_path=tasks.sync_crm.module_path)
    assert crm.status == JobStatus.SCHEDULED  # failed once, waiting for its retry
    assert "503" in crm.last_error_message
    demo.DEMO_CRM_FAILURE_RATE = 0.0
    assert work_off(now=now + timedelta(seconds=30)).succeeded == 2  # and the on_complete
    crm.refresh_from_db()
    assert crm.status == JobStatus.SUCCEEDED
    assert [a.outcome for a in crm.attempt_set.order_by("number")] == ["failed", "succeeded"]


def test_the_crm_syncs_retries_are_seconds_apart(client, demo):
    """Watch the retries: the gaps between the flaky CRM sync's attempts read plainly in the
    admin (3 s, 6 s, 12 s...), not a jittered fraction of a second."""
    demo.DEMO_CRM_FAILURE_RATE = 1.0
    client.post(reverse("demo:signup"), {"username": "dee", "email": "dee@example.com"})
    now = timezone.now()
    gaps = []
    for _ in range(4):
        work_off(now=now)
        crm = Job.objects.get(task_path=tasks.sync_crm.module_path)
        gaps.append((crm.run_after - now).total_seconds())
        now = crm.run_after
    assert crm.attempts == 4 and crm.status == JobStatus.SCHEDULED
    assert [round(gap) for gap in gaps] == [3, 6, 12, 24]
    assert tasks.CRM_BACKOFF.delay(20).total_seconds() == 60  # capped at a minute


def test_synchronous_signup_does_the_work_in_the_request_and_is_timed(client, demo):
    response = client.post(
        reverse("demo:signup"),
        {"username": "cy", "email": "cy@example.com", "mode": "synchronous"},
        follow=True,
    )
    assert response.status_code == 200
    assert not enqueued_jobs()
    profile = Profile.objects.get(user__username="cy")
    assert profile.crm_id and profile.avatar and profile.provisioned_at
    assert "synchronous" in response.context["timings"]


def test_signup_rejects_bad_input_and_taken_names(client, demo):
    assert client.post(reverse("demo:signup"), {"username": "", "email": "x"}).status_code == 400
    User.objects.create_user("dup", "dup@example.com")
    response = client.post(reverse("demo:signup"), {"username": "dup", "email": "d@example.com"})
    assert response.status_code == 400
    assert b"is taken" in response.content
    assert not enqueued_jobs()


def test_checkout_authorises_in_the_request_and_defers_the_rest(client, demo):
    client.get(reverse("demo:checkout"))
    mug = Product.objects.get(sku="MUG-01")
    response = client.post(
        reverse("demo:checkout"),
        {"product": mug.pk, "quantity": 2, "email": "e@example.com", "card": "4242424242424242"},
    )
    assert response.status_code == 302
    order = Order.objects.get()
    assert order.status == Order.Status.AUTHORIZED and order.authorization
    assert_enqueued(tasks.send_receipt, args=[order.pk])
    assert_enqueued(tasks.reserve_inventory, args=[order.pk])
    assert_enqueued(tasks.track_event)
    assert work_off().succeeded == 3
    mug.refresh_from_db()
    order.refresh_from_db()
    assert mug.stock == 23 and order.reserved and order.receipt_sent_at
    assert AnalyticsEvent.objects.get().payload["order"] == order.pk
    # At least once: running the reservation again takes nothing more.
    tasks.reserve_inventory.call(order.pk)
    mug.refresh_from_db()
    assert mug.stock == 23


def test_a_declined_card_stores_no_order_and_no_job(client, demo):
    client.get(reverse("demo:checkout"))
    mug = Product.objects.get(sku="MUG-01")
    response = client.post(
        reverse("demo:checkout"), {"product": mug.pk, "card": "4000 0000 0000 0002"}
    )
    assert response.status_code == 402
    assert b"declined" in response.content
    assert not Order.objects.exists()
    assert_not_enqueued(tasks.send_receipt)


def test_reserving_more_than_the_stock_fails_at_once(client, demo):
    client.get(reverse("demo:checkout"))
    poster = Product.objects.get(sku="PST-01")  # 3 in stock
    client.post(reverse("demo:checkout"), {"product": poster.pk, "quantity": 5, "card": "4" * 16})
    work_off()
    job = Job.objects.get(task_path=tasks.reserve_inventory.module_path)
    assert job.status == JobStatus.FAILED and job.attempts == 1  # fail_on=(OutOfStock,)
    poster.refresh_from_db()
    assert poster.stock == 3


def test_report_is_a_batch_of_chunks_whose_file_goes_to_token_holders(client, demo):
    response = client.post(reverse("demo:reports"), {"rows": 60})
    report = Batch.objects.get()
    assert response["Location"] == reverse("demo:report-status", args=[report.pk])
    chunks = Job.objects.filter(batch=report).order_by("args")
    assert [job.args for job in chunks] == [[1, 25], [26, 50], [51, 60]]
    assert {job.task_path for job in chunks} == {tasks.build_report_chunk.module_path}
    assert (report.total, report.description, report.state) == (3, "Report of 60 rows", "running")
    page = client.get(response["Location"])
    status_url = page.context["status_url"]
    assert f"/jobs/batches/{report.pk}/?token=" in status_url
    body = client.get(status_url).json()
    assert (body["state"], body["percent"], body["counts"]["pending"]) == ("running", 0.0, 3)

    token = status_url.split("token=")[1]
    download = page.context["download_url"]
    assert client.get(download, {"token": token}).status_code == 404  # not ready yet
    done = work_off()
    assert done.succeeded == 4  # three chunks, then the on_success callback
    body = client.get(status_url).json()
    assert (body["state"], body["percent"], body["failures"]["count"]) == ("succeeded", 100.0, 0)
    assert Job.objects.get(task_path=tasks.report_done.module_path).status == JobStatus.SUCCEEDED
    response = client.get(download, {"token": token})
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 61 and rows[0] == ["row", "value", "square"]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 61))
    assert client.get(download).status_code == 404  # no token
    assert client.get(download, {"token": "forged"}).status_code == 404
    job_token = make_token(chunks[0].pk)  # a chunk's own token opens no report
    assert client.get(download, {"token": job_token}).status_code == 404


def test_a_failing_chunk_is_retried_and_the_report_still_completes(client, demo):
    client.post(reverse("demo:reports"), {"rows": 100, "flaky": "on"})
    report = Batch.objects.get()
    now = timezone.now()
    work_off(now=now)
    body = client.get(
        client.get(reverse("demo:report-status", args=[report.pk])).context["status_url"]
    ).json()
    assert body["state"] == "running" and body["counts"] == {
        "pending": 1,
        "succeeded": 3,
        "failed": 0,
        "cancelled": 0,
    }
    flaky = Job.objects.get(batch=report, status=JobStatus.SCHEDULED)
    assert "data warehouse" in flaky.last_error_message and flaky.args == [51, 75]
    work_off(now=now + timedelta(seconds=10))
    report.refresh_from_db()
    assert report.state == "succeeded"
    path = tasks.report_file(report.pk)
    lines = path.read_text().splitlines()
    assert len(lines) == 101 and lines[51] == "51,54,2601"  # the retried chunk, once


def test_a_report_whose_chunk_fails_for_good_says_so(client, demo):
    client.post(reverse("demo:reports"), {"rows": 30})
    report = Batch.objects.get()
    first = Job.objects.filter(batch=report).order_by("args").first()
    cancel_job(first.pk)
    work_off()
    report.refresh_from_db()
    assert report.state == "failed" and report.cancelled == 1
    assert not Job.objects.filter(task_path=tasks.report_done.module_path).exists()
    token = client.get(reverse("demo:report-status", args=[report.pk])).context["status_url"]
    download = reverse("demo:report-download", args=[report.pk])
    assert client.get(download, {"token": token.split("token=")[1]}).status_code == 404


def test_partner_calls_go_through_the_rate_limited_queue(client, demo):
    assert client.post(reverse("demo:partner"), {"count": 5}).status_code == 302
    assert len(assert_enqueued(tasks.call_partner, queue="partner", count=5)) == 5
    page = client.get(reverse("demo:partner"))
    assert page.context["waiting"] == 5
    assert tasks.call_partner.call(99) == {"item": 99, "ok": True}
    assert PartnerCall.objects.filter(item=99).exists()


def test_partner_page_shows_the_most_calls_in_any_one_second(client, demo):
    """Counted over a sliding window, as the partner counts, not per calendar second."""
    from example_project.demo.views import most_in_one_second

    now = timezone.now()
    for offset in (0.5, 1.1, 1.7, 1.95, 5.0):
        call = PartnerCall.objects.create(item=1)  # (received_at is set on creation)
        PartnerCall.objects.filter(pk=call.pk).update(
            received_at=now - timedelta(seconds=10 - offset)
        )
    page = client.get(reverse("demo:partner"))
    assert page.context["most"] == 3  # 1.1, 1.7, 1.95
    assert b'<b id="most">3</b>' in page.content
    base = now - timedelta(minutes=1)
    times = [base + timedelta(seconds=s) for s in (0, 0.999, 1.0, 1.5)]
    assert most_in_one_second(times) == 3  # [0.999, 1.0, 1.5]; 0 and 1.0 are 1 s apart
    assert most_in_one_second([]) == 0


def test_the_dead_letter_job_ends_failed(client, demo):
    from datetime import timedelta

    from django.utils import timezone

    client.post(reverse("demo:home"), {"action": "fail"})
    now = timezone.now()
    for step in range(3):
        work_off(now=now + timedelta(seconds=3 * step))
    job = Job.objects.get(task_path=tasks.always_fails.module_path)
    assert job.status == JobStatus.FAILED and job.attempts == 3


def test_every_page_renders(client, demo):
    for name in ("home", "signup", "checkout", "reports", "partner"):
        assert client.get(reverse(f"demo:{name}")).status_code == 200

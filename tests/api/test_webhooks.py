"""Webhooks on completion, delivered as jobs of their own to a real local HTTP server."""

import json

import pytest
from django.utils import timezone

from asyncjobs import cancel_job, outbound
from asyncjobs.models import Job, JobStatus
from asyncjobs.services import WEBHOOK_TASK, enqueue_callback
from tests import tasks

pytestmark = pytest.mark.django_db


def deliveries(server):
    return [r for r in server.requests if r["path"] == "/hook"]


def verified(request):
    outbound.verify_signature(
        request["body"], request["headers"]["AsyncJobs-Signature"], secret="test-webhook-secret"
    )
    return json.loads(request["body"])


def test_succeeded_python_task_posts_a_signed_notice(http_server, runner):
    result = tasks.add.using(webhook_url=f"{http_server.url}/hook").enqueue(2, 3)
    runner().drain()
    (request,) = deliveries(http_server)
    notice = verified(request)
    assert notice["id"] == result.id
    assert notice["status"] == "succeeded"
    assert notice["result"] == 5
    assert notice["attempts"] == 1
    assert notice["finished_at"]
    assert request["headers"]["AsyncJobs-Event"] == "job.succeeded"
    delivery = Job.objects.get(task_path=WEBHOOK_TASK)
    assert delivery.status == JobStatus.SUCCEEDED
    assert delivery.attempt_set.get().http_status == 200


def test_failed_job_notice_carries_the_error(http_server, runner):
    tasks.fail_always.using(max_attempts=1, webhook_url=f"{http_server.url}/hook").enqueue("x")
    runner().drain()
    notice = verified(deliveries(http_server)[0])
    assert notice["status"] == "failed"
    assert notice["error"] == {"error_class": "builtins.ValueError", "message": "x"}


def test_cancelled_job_notice(http_server, runner):
    result = tasks.add.using(webhook_url=f"{http_server.url}/hook").enqueue(1, 1)
    cancel_job(result.id)
    runner().drain()
    assert verified(deliveries(http_server)[0])["status"] == "cancelled"


def test_callback_job_with_webhook(http_server, runner):
    enqueue_callback(
        url=f"{http_server.url}/ok", webhook_url=f"{http_server.url}/hook", now=timezone.now()
    )
    runner().drain()
    assert verified(deliveries(http_server)[0])["result"]["status"] == 200


def test_no_notice_while_retrying_and_failed_delivery_is_retried(http_server, runner, settings):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "WEBHOOK_MAX_ATTEMPTS": 2}
    result = tasks.flaky.using(webhook_url=f"{http_server.url}/fail").enqueue("wh", 1)
    start = timezone.now()
    for hours in range(4):  # past every backoff
        runner().drain(now=start + timezone.timedelta(hours=hours))
    assert Job.objects.get(pk=result.id).status == JobStatus.SUCCEEDED
    hooks = [r for r in http_server.requests if r["path"] == "/fail"]
    assert len(hooks) == 2  # one notice (at the end), delivered twice: 500, then out of tries
    delivery = Job.objects.get(task_path=WEBHOOK_TASK)
    assert delivery.status == JobStatus.FAILED
    assert [a.http_status for a in delivery.attempt_set.all()] == [500, 500]


def test_webhook_needs_a_secret_and_an_allowed_url(settings):
    from asyncjobs.exceptions import ConfigurationError

    with pytest.raises(outbound.OutboundURLRefusedError):
        tasks.add.using(webhook_url="http://10.0.0.1/hook").enqueue(1, 1)
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "WEBHOOK_SECRET": None}
    with pytest.raises(ConfigurationError, match="WEBHOOK_SECRET"):
        tasks.add.using(webhook_url="http://127.0.0.1:9/hook").enqueue(1, 1)
    assert not Job.objects.exists()

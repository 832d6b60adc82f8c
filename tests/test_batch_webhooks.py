"""A batch's webhook: delivered when the batch finishes, through the outbound machinery of
job webhooks (signed, guarded), to a real local HTTP server."""

import json

import pytest

from asyncjobs import batch, outbound, retry_job
from asyncjobs.exceptions import ConfigurationError
from asyncjobs.models import Batch, Job
from asyncjobs.services import BATCH_WEBHOOK_TASK
from asyncjobs.testing import work_off
from tests import batch_tasks as t

pytestmark = pytest.mark.django_db


def notices(server):
    found = []
    for request in server.requests:
        if request["path"] != "/hook":
            continue
        outbound.verify_signature(
            request["body"], request["headers"]["AsyncJobs-Signature"], secret="test-webhook-secret"
        )
        found.append((request["headers"]["AsyncJobs-Event"], json.loads(request["body"])))
    return found


def test_the_finish_posts_a_signed_notice_with_the_counts(http_server):
    with batch(webhook_url=f"{http_server.url}/hook", description="report") as b:
        b.enqueue_many([(t.piece, [n], {}) for n in range(3)])
    assert notices(http_server) == []
    work_off()
    ((event, body),) = notices(http_server)
    assert event == "batch.succeeded"
    assert body | {"finished_at": None} == {
        "id": b.id,
        "type": "batch",
        "description": "report",
        "state": "succeeded",
        "total": 3,
        "succeeded": 3,
        "failed": 0,
        "cancelled": 0,
        "finished_at": None,
    }
    assert body["finished_at"]


def test_each_finish_sends_one_notice(http_server, tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("x")
    with batch(webhook_url=f"{http_server.url}/hook") as b:
        failing = b.enqueue(t.fail_while, str(flag))
    work_off()
    assert [event for event, _ in notices(http_server)] == ["batch.failed"]
    retry_job(failing.id)
    flag.unlink()
    work_off()
    assert [event for event, _ in notices(http_server)] == ["batch.failed", "batch.succeeded"]
    assert Job.objects.filter(task_path=BATCH_WEBHOOK_TASK, status="succeeded").count() == 2


def test_a_refused_url_fails_at_creation_storing_nothing():
    for url in ("http://10.0.0.1/hook", "http://169.254.169.254/latest", "ftp://example.com/"):
        with pytest.raises(outbound.OutboundURLRefusedError), batch(webhook_url=url) as b:
            b.enqueue(t.piece, 1)
    assert Batch.objects.count() == 0 and Job.objects.count() == 0


def test_a_webhook_needs_the_secret(settings):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "WEBHOOK_SECRET": None}
    with pytest.raises(ConfigurationError), batch(webhook_url="http://127.0.0.1:9/hook"):
        pass
    assert Batch.objects.count() == 0

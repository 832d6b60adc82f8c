"""An operator follows a batch in a real headless browser: from the dashboard to the batch's
page, "Retry all failed" behind its confirmation, a real worker runs the retried job, and
the page shows the batch succeeded with a full bar; "Cancel the rest" of a big batch hands
the rest to a job, which the page shows until a real worker has run it."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from asyncjobs import batch
from asyncjobs.models import Batch, BatchState
from tests import batch_tasks as t
from tests.conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra installs it
    expect = None


def _signed_in(browser, live_server):
    """A 1280 px page signed in to the admin as ``ops``."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "secret-pw")
    page.click("input[type=submit]")
    return page


def test_operator_retries_a_batchs_failed_job_and_sees_it_succeed(
    browser, live_server, django_user_model, runner, worker_process, tmp_path
):
    django_user_model.objects.create_superuser("ops", password="secret-pw")
    blocker = Path(tmp_path, "blocker")
    blocker.write_text("the job fails while this file exists")
    with batch(description="nightly import") as b:
        b.enqueue_many([(t.piece, [n], {}) for n in range(3)])
        b.enqueue(t.fail_while, str(blocker))
    runner().drain()
    assert Batch.objects.get(pk=b.id).state == BatchState.FAILED

    page = _signed_in(browser, live_server)
    page.goto(f"{live_server.url}/admin/asyncjobs/dashboard/")
    row = page.locator(f"#batches tr[data-batch='{b.id}']")
    expect(row).to_contain_text("nightly import")
    expect(row.locator(".asyncjobs-bar")).to_have_attribute("aria-valuenow", "100")
    row.get_by_role("link", name="nightly import").click()

    expect(page.locator("#batch-jobs tr[data-status=failed] .count")).to_have_text("1")
    page.click("#retry-failed")
    expect(page.locator("body")).to_contain_text("Queue again the 1 failed job(s)")
    page.click("#confirm")
    expect(page.locator(".messagelist")).to_contain_text("Queued again 1 failed job(s)")
    expect(page.locator("#batch-jobs tr[data-status=queued] .count")).to_have_text("1")
    expect(page.locator("#batch-progress .asyncjobs-bar")).to_have_attribute("aria-valuenow", "75")
    assert Batch.objects.get(pk=b.id).state == BatchState.RUNNING

    blocker.unlink()
    worker = worker_process("--burst")
    assert worker.wait(60) == 0, worker.output()
    wait_until(lambda: Batch.objects.get(pk=b.id).state == BatchState.SUCCEEDED)
    page.reload()
    expect(page.locator("#batch-progress .asyncjobs-bar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#batch-jobs tr[data-status=succeeded] .count")).to_have_text("4")
    expect(page.locator("#retry-failed")).to_have_count(0)


def test_operator_cancels_the_rest_of_a_big_batch_and_a_job_finishes_it(
    browser, live_server, django_user_model, worker_process, tmp_path
):
    """Past 1,000 unfinished jobs the click cancels 1,000 and hands the rest to a job, which
    the page shows; a real worker runs it and the batch ends cancelled, its bar full."""
    django_user_model.objects.create_superuser("ops", password="secret-pw")
    later = t.piece.using(run_after=timezone.now() + timedelta(hours=1))  # only the canceller runs
    with batch(description="huge import", on_complete=t.completed) as b:
        b.enqueue_many([(later, [n], {}) for n in range(1100)])

    page = _signed_in(browser, live_server)
    page.goto(f"{live_server.url}/admin/asyncjobs/batch/{b.id}/change/")
    page.click("#cancel-rest")
    expect(page.locator("body")).to_contain_text("Cancel the 1100 job(s)")
    page.click("#confirm")
    expect(page.locator(".messagelist")).to_contain_text("Cancelled 1000 job(s)")
    expect(page.locator(".messagelist")).to_contain_text("A job cancels the rest, 500 at a time")
    expect(page.locator("#batch-cancelling")).to_contain_text("Cancelling the rest")
    expect(page.locator("#batch-jobs tr[data-status=scheduled] .count")).to_have_text("100")
    page.screenshot(path=str(tmp_path / "batch-cancelling.png"), full_page=True)

    worker = worker_process("--burst")
    assert worker.wait(60) == 0, worker.output()
    wait_until(lambda: Batch.objects.get(pk=b.id).state == BatchState.FAILED)
    page.reload()
    expect(page.locator("#batch-cancelling")).to_have_count(0)
    expect(page.locator("#batch-jobs tr[data-status=cancelled] .count")).to_have_text("1100")
    expect(page.locator("#batch-progress .asyncjobs-bar")).to_have_attribute("aria-valuenow", "100")

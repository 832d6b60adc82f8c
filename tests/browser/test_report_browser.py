"""The example project's batch pages in a real headless browser, with a real worker: a
report (a batch of chunk jobs) whose bar moves to 100% by polling /jobs/batches/<id>/, then
its download; and the sign-up fan-out's "all five done"."""

import re
import signal

import pytest

from asyncjobs.models import Batch, BatchState, Job
from example_project.demo import tasks
from tests.conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra installs it
    expect = None


def test_report_bar_moves_chunk_by_chunk_to_100_and_offers_the_download(
    browser, live_server, worker_process
):
    # One slot: the 6 chunks (25 rows x 20 ms each) run one after the other, so the bar
    # must be seen part-way.
    worker = worker_process("--queue", "reports", "--concurrency", "1")
    page = browser.new_page()
    page.goto(f"{live_server.url}/demo/reports/")
    page.fill("input[name=rows]", "150")
    page.click("#start-report")
    expect(page.locator("#message")).to_contain_text("Still processing", timeout=20_000)
    expect(page.locator("#percent")).to_have_text(re.compile(r"^(16|33|50|66|83)%$"))
    expect(page.locator("#percent")).to_have_text("100%", timeout=30_000)
    expect(page.locator("#message")).to_have_text("Done: 150 rows, in 6 chunks.")
    assert page.locator("#fill").evaluate("el => el.style.width") == "100%"

    report = Batch.objects.get()
    assert report.state == BatchState.SUCCEEDED and report.total == 6
    with page.expect_download(timeout=10_000) as download:
        page.click("#download-link")
    with open(download.value.path()) as csv_file:
        lines = csv_file.read().splitlines()
    assert lines[0] == "row,value,square" and len(lines) == 151
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, 151))
    # The on_success callback assembled the same file (or found it assembled).
    wait_until(
        lambda: Job.objects.filter(
            task_path=tasks.report_done.module_path, status="succeeded"
        ).exists()
    )
    assert worker.proc.poll() is None, worker.output()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()


def test_signup_page_says_when_all_five_are_done(browser, live_server, worker_process):
    worker = worker_process(
        "--concurrency",
        "5",
        extra_env={"DEMO_BASE_URL": live_server.url, "DEMO_CRM_FAILURE_RATE": "0"},
    )
    page = browser.new_page()
    page.goto(f"{live_server.url}/demo/signup/")
    page.fill("input[name=username]", "grace")
    page.fill("input[name=email]", "grace@example.com")
    page.click("button[value=background]")
    expect(page.locator("#all-done")).to_be_visible()
    expect(page.locator("#batch-summary")).to_have_text(
        "all five done (5 succeeded).", timeout=30_000
    )
    wait_until(
        lambda: Job.objects.filter(
            task_path=tasks.signup_complete.module_path, status="succeeded"
        ).exists()
    )
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()

"""The example project's report page in a real headless browser, with a real worker: start
a report, watch the progress bar move to 100% through /jobs/<id>/ polling, download it."""

import signal

import pytest

from asyncjobs.models import Job, JobStatus
from example_project.demo import tasks
from tests.conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra installs it
    expect = None


def test_report_progress_bar_reaches_100_and_offers_the_download(
    browser, live_server, worker_process
):
    worker = worker_process("--queue", "reports", "--concurrency", "1")
    page = browser.new_page()
    page.goto(f"{live_server.url}/demo/reports/")
    page.fill("input[name=rows]", "150")  # 150 x 20 ms: long enough to be seen running
    page.click("#start-report")
    expect(page.locator("#message")).to_contain_text("Still processing", timeout=20_000)
    expect(page.locator("#percent")).to_have_text("100%", timeout=30_000)
    expect(page.locator("#message")).to_contain_text("Done: 150 rows")
    assert page.locator("#fill").evaluate("el => el.style.width") == "100%"

    job = Job.objects.get(task_path=tasks.build_report.module_path)
    wait_until(lambda: Job.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED)
    with page.expect_download(timeout=10_000) as download:
        page.click("#download-link")
    path = download.value.path()
    with open(path) as csv_file:
        lines = csv_file.read().splitlines()
    assert lines[0] == "row,value,square" and len(lines) == 151
    assert worker.proc.poll() is None, worker.output()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()

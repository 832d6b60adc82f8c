"""The admin in a real headless browser: Playwright driving Debian's Chromium.

Log in, open the dashboard, see a failed job, retry its group from the dead-letter page, and
watch it succeed once a worker runs. Skipped where /usr/bin/chromium or Playwright is missing,
except under CI=true, where that is a failure. With UPDATE_SCREENSHOTS=1 it also refreshes
docs/screenshots/.
"""

import os
from pathlib import Path

import pytest

from asyncjobs.models import Job, JobStatus
from tests import tasks
from tests.conftest import ROOT, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra installs it
    expect = None


def shot(page, name):
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        page.screenshot(path=str(ROOT / "docs" / "screenshots" / name), full_page=True)


def test_operator_retries_a_dead_letter_group_and_watches_it_succeed(
    browser, live_server, django_user_model, runner, worker_process
):
    django_user_model.objects.create_superuser("ops", password="secret-pw")
    for i in range(3):
        tasks.add.enqueue(i, i)
    result = tasks.flaky.using(max_attempts=1).enqueue("browser", 1)  # fails once, then works
    tasks.fail_fast.enqueue()
    runner().drain()
    assert Job.objects.get(pk=result.id).status == JobStatus.FAILED

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "secret-pw")
    page.click("input[type=submit]")
    page.click("a[href='/admin/asyncjobs/dashboard/']")
    expect(page.locator("#throughput-chart")).to_be_visible()
    expect(page.locator("tr[data-queue='default'] td.dead-letter")).to_contain_text("2")
    shot(page, "dashboard.png")

    page.goto(f"{live_server.url}/admin/asyncjobs/job/{result.id}/change/")
    expect(page.locator("body")).to_contain_text("flaky failure for browser")
    shot(page, "job.png")

    page.goto(f"{live_server.url}/admin/asyncjobs/job/dead-letter/")
    row = page.locator("#dead-letter tr", has=page.locator("[title='tests.tasks.flaky']"))
    expect(row).to_contain_text("builtins.ConnectionError")
    row.get_by_role("button", name="Retry all").click()
    expect(page.locator("body")).to_contain_text("all 1 failed job(s)")
    page.click("input[type=submit][value^='Yes']")
    expect(page.locator(".messagelist")).to_contain_text("Queued again 1 job(s)")
    assert Job.objects.get(pk=result.id).status == JobStatus.QUEUED

    worker = worker_process("--burst")
    assert worker.wait(60) == 0, worker.output()
    page.goto(f"{live_server.url}/admin/asyncjobs/job/{result.id}/change/")
    expect(page.locator("body")).to_contain_text("succeeded")
    wait_until(lambda: Job.objects.get(pk=result.id).status == JobStatus.SUCCEEDED)
    # The dashboard refreshes itself: the dead letter of "default" drops to 1 without reload.
    page.goto(f"{live_server.url}/admin/asyncjobs/dashboard/")
    expect(page.locator("tr[data-queue='default'] td.dead-letter")).to_contain_text("1")
    assert Path(ROOT / "docs").is_dir()

"""The operator's screens at a laptop's width (1280 px), in a real headless browser: nothing
the operator needs is off screen, breadcrumbs sit in the admin's bar, and times show seconds
(backoff between attempts must be readable). The jobs are the example project's, whose task
paths are long and whose errors are real httpx messages. With UPDATE_SCREENSHOTS=1 it also
refreshes docs/screenshots/jobs.png and dead-letter.png."""

import re

import pytest
from django.utils import timezone

from asyncjobs import batch
from asyncjobs.models import Batch, Job
from asyncjobs.testing import work_off
from example_project.demo import tasks
from tests.browser.test_admin_browser import shot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra installs it
    expect = None

WIDTH = 1280
SECONDS = re.compile(r"\b\d{2}:\d{2}:\d{2}\.\d{3}\b")


@pytest.fixture
def operator_page(browser, live_server, django_user_model, settings, tmp_path):
    """A superuser's page at 1280 x 800, logged in, with a dead letter of demo jobs."""
    settings.DEMO_BASE_URL = live_server.url
    settings.DEMO_CRM_FAILURE_RATE = 1.0
    settings.MEDIA_ROOT = str(tmp_path)
    user = django_user_model.objects.create_user("reader", "reader@example.com")
    tasks.sync_crm.using(max_attempts=2).enqueue(user.pk)
    tasks.always_fails.using(max_attempts=1).enqueue(
        "the demo asked for it, with a message long enough to wrap over several lines " * 3
    )
    tasks.track_event.enqueue("page_view", {"path": "/"})
    with batch(description="a batch of page views, with a description long enough to wrap") as b:
        b.enqueue_many(
            [(tasks.track_event, ("page_view", {"path": f"/{n}/"}), {}) for n in range(3)]
        )
    tasks.send_welcome_email.using(run_after=timezone.now() + timezone.timedelta(days=1)).enqueue(
        user.pk
    )  # the longest task name of the demo, waiting
    old = tasks.track_event.enqueue("page_view", {"path": "/old/"})
    Job.objects.filter(pk=old.id).update(enqueued_at=timezone.now() - timezone.timedelta(hours=23))
    now = timezone.now()
    work_off(now=now)
    work_off(now=now + timezone.timedelta(seconds=3))  # the CRM sync's retry, 3 s later
    django_user_model.objects.create_superuser("ops", password="secret-pw")
    page = browser.new_page(viewport={"width": WIDTH, "height": 800})
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "secret-pw")
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_be_visible()
    return page


def right_edge(locator):
    box = locator.bounding_box()
    assert box is not None, "not rendered"
    return box["x"] + box["width"]


def no_horizontal_scroll(page):
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_dead_letter_fits_and_sits_under_styled_breadcrumbs(operator_page, live_server):
    page = operator_page
    page.goto(f"{live_server.url}/admin/asyncjobs/job/dead-letter/")
    rows = page.locator("#dead-letter tbody tr")
    expect(rows).to_have_count(2)
    for button in page.get_by_role("button", name=re.compile("^Discard all$")).all():
        expect(button).to_be_in_viewport()
        assert right_edge(button) <= WIDTH
    assert no_horizontal_scroll(page)
    crumbs = page.locator("nav ol.breadcrumbs li")
    expect(crumbs).to_have_text(["Home", "Background jobs", "Jobs", "Dead letter"])
    background = page.locator("nav ol.breadcrumbs").evaluate(
        "el => getComputedStyle(el).backgroundColor"
    )
    assert background not in ("rgba(0, 0, 0, 0)", "transparent")
    shot(page, "dead-letter.png")


def test_dashboard_breadcrumbs_are_the_admins(operator_page, live_server):
    page = operator_page
    page.goto(f"{live_server.url}/admin/asyncjobs/dashboard/")
    expect(page.locator("nav ol.breadcrumbs li")).to_have_text(
        ["Home", "Background jobs", "Dashboard"]
    )
    assert no_horizontal_scroll(page)


def test_job_list_shows_every_column_with_short_task_names(operator_page, live_server):
    page = operator_page
    page.goto(f"{live_server.url}/admin/asyncjobs/job/")
    headers = page.locator("#result_list thead th")
    names = [h.strip().lower() for h in headers.all_inner_texts()]
    for wanted in ("id", "task", "queue", "status", "attempts", "age", "enqueued"):
        assert wanted in names, names
    # The admin scrolls a table too wide for its column inside the column: every header
    # must end within that column's visible width, not only within the window.
    visible = right_edge(page.locator("#changelist .results"))
    assert visible <= WIDTH
    for header in headers.all():
        assert right_edge(header) <= visible, header.inner_text()
    assert page.locator("#changelist .results").evaluate("el => el.scrollWidth <= el.clientWidth")
    assert no_horizontal_scroll(page)
    crm = page.locator("#result_list [title='example_project.demo.tasks.sync_crm']")
    expect(crm).to_have_text("sync_crm")
    assert "example_project.demo" not in page.locator("#result_list").inner_text()
    assert SECONDS.search(page.locator("#result_list").inner_text())
    expect(page.locator("#result_list .asyncjobs-batch-mark").first).to_be_visible()
    shot(page, "jobs.png")


def test_batch_list_and_page_fit_with_their_bars(operator_page, live_server):
    page = operator_page
    page.goto(f"{live_server.url}/admin/asyncjobs/batch/")
    expect(page.locator("#result_list .asyncjobs-bar").first).to_be_visible()
    shot(page, "batches.png")
    headers = page.locator("#result_list thead th")
    visible = right_edge(page.locator("#changelist .results"))
    for header in headers.all():
        assert right_edge(header) <= visible, header.inner_text()
    assert no_horizontal_scroll(page)
    made = Batch.objects.get()
    page.goto(f"{live_server.url}/admin/asyncjobs/batch/{made.pk}/change/")
    bar = page.locator("#batch-progress .asyncjobs-bar")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#batch-jobs tr[data-status=succeeded] .count")).to_have_text("3")
    assert no_horizontal_scroll(page)
    shot(page, "batch.png")
    page.click("#batch-jobs tr[data-status=succeeded] a")
    expect(page.locator("#result_list tbody tr")).to_have_count(3)


def test_job_page_shows_attempt_times_with_seconds(operator_page, live_server):
    page = operator_page
    job = Job.objects.get(task_path=tasks.sync_crm.module_path)
    page.goto(f"{live_server.url}/admin/asyncjobs/job/{job.pk}/change/")
    timeline = page.locator("fieldset", has_text="Timeline").first
    assert SECONDS.search(timeline.inner_text())
    attempts = page.locator("#attempt_set-group")
    expect(attempts).to_contain_text("503")
    assert len(SECONDS.findall(attempts.inner_text())) >= 2
    assert no_horizontal_scroll(page)
    table = page.locator("#attempt_set-group table")
    assert right_edge(table) <= WIDTH
    assert table.evaluate("el => el.parentElement.scrollWidth <= el.parentElement.clientWidth")
    assert "p.m." not in page.locator("#content").inner_text()
    assert "a.m." not in page.locator("#content").inner_text()

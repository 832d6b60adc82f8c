"""What the operator's screens show (issue 24, part 5): times to the millisecond, the task's
short name with its path on hover, an age column, the gap between attempts, and breadcrumbs
in the admin's own bar. The layout at 1280 px is checked in a browser (tests/browser)."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from asyncjobs.admin.display import compact_age, precise_time
from asyncjobs.models import Job
from asyncjobs.testing import work_off
from tests import tasks

pytestmark = pytest.mark.django_db

SECONDS = re.compile(rb"\d{2}:\d{2}:\d{2}\.\d{3}")
MOMENT = datetime(2026, 12, 1, 22, 12, 7, 512_999, tzinfo=UTC)


@pytest.fixture
def admin_client(client):
    client.force_login(User.objects.create_superuser("boss", password="pw"))
    return client


def test_precise_time_shows_milliseconds_in_the_current_time_zone():
    shown = precise_time(MOMENT)
    assert ">2026-12-01</span>" in shown and ">22:12:07.512 UTC</span>" in shown
    assert 'datetime="2026-12-01T22:12:07.512999+00:00"' in shown
    assert 'title="2026-12-01 22:12:07.512 UTC"' in shown
    assert ">22:12:07.512</time>" in precise_time(MOMENT, date=False)
    with timezone.override("Europe/Paris"):
        assert ">23:12:07.512 CET</span>" in precise_time(MOMENT)
    assert precise_time(None) == "—"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0 s"), (59, "59 s"), (60, "1 min"), (3599, "59 min"), (3600, "1 h"), (86400 * 3, "3 d")],
)
def test_compact_age(seconds, shown):
    assert compact_age(timedelta(seconds=seconds)) == shown


def test_job_list_shows_short_task_names_attempts_age_and_seconds(admin_client):
    result = tasks.add.enqueue(1, 2)
    Job.objects.filter(pk=result.id).update(enqueued_at=timezone.now() - timedelta(hours=5))
    page = admin_client.get("/admin/asyncjobs/job/")
    body = page.content
    assert b'<span title="tests.tasks.add">add</span>' in body
    assert b"column-age" in body and b">5 h</span>" in body
    assert b"column-attempts_display" in body and b"0/" in body
    assert SECONDS.search(body)
    assert b"p.m." not in body and b"a.m." not in body


def test_job_page_shows_times_to_the_millisecond_and_the_gap_between_attempts(admin_client):
    result = tasks.fail_always.using(max_attempts=2).enqueue("twice")  # Fixed(5 s) backoff
    now = timezone.now()
    work_off(now=now)
    work_off(now=now + timedelta(seconds=5))
    job = Job.objects.get(pk=result.id)
    assert job.attempts == 2
    page = admin_client.get(f"/admin/asyncjobs/job/{job.pk}/change/")
    body = page.content.decode()
    started = [a.started_at for a in job.attempt_set.order_by("number")]
    for moment in (job.enqueued_at, job.finished_at, *started):
        assert precise_time(moment) in body
    assert ">5.0 s</span>" in body  # the second attempt started 5 s after the first ended
    assert "p.m." not in body and "a.m." not in body


def test_dead_letter_and_dashboard_breadcrumbs_sit_in_the_admins_bar(admin_client, runner):
    tasks.fail_fast.enqueue()
    runner().drain()
    for url, last in (
        ("/admin/asyncjobs/job/dead-letter/", "Dead letter"),
        ("/admin/asyncjobs/dashboard/", "Dashboard"),
    ):
        body = admin_client.get(url).content.decode()
        crumbs = re.search(r'<ol class="breadcrumbs">(.*?)</ol>', body, re.S)
        assert crumbs, url
        items = re.findall(r"<li[^>]*>(.*?)</li>", crumbs.group(1), re.S)
        labels = [re.sub(r"<[^>]+>", "", item).strip() for item in items]
        assert labels[:2] == ["Home", "Background jobs"] and labels[-1] == last
        assert '<div class="breadcrumbs">' not in body
    dead_letter = admin_client.get("/admin/asyncjobs/job/dead-letter/").content.decode()
    assert '<td title="tests.tasks.fail_fast">' in dead_letter
    assert ">Retry all</button>" in dead_letter and ">Discard all</button>" in dead_letter

"""Size limits: MAX_ARGUMENTS_BYTES at enqueue (Python, bulk, API), MAX_RESULT_BYTES in the
worker, and large values shown truncated (MAX_DISPLAY_BYTES) in the admin and the API with
the whole value to download for those allowed to read the job."""

import json
import sys

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from asyncjobs import enqueue_many, services
from asyncjobs.exceptions import ArgumentsTooLargeError, InvalidArgumentsError
from asyncjobs.models import Job, JobStatus, Worker
from asyncjobs.services import enqueued_by
from asyncjobs.tokens import make_token
from tests import tasks

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024


def stored_size(args, kwargs=None):
    """The size the limit measures: the JSON texts of args and kwargs as stored."""
    return len(json.dumps(list(args))) + len(json.dumps(kwargs or {}))


@pytest.fixture
def limits(settings):
    """Set asyncjobs settings for one test: ``limits(MAX_ARGUMENTS_BYTES=None)``."""

    def apply(**values):
        settings.ASYNCJOBS = {**settings.ASYNCJOBS, **values}

    return apply


# --- The measure ------------------------------------------------------------------------------


SAMPLES = [
    None,
    True,
    0,
    -1,
    2**64,
    -(2**200),
    1.5,
    -2.2250738585072014e-308,
    1.7976931348623157e308,
    "",
    "plain",
    'quote " backslash \\ slash /',
    "\x01\x1f\n\t\x7f",
    "é" * 10,
    "\U0001f600" * 5,
    "\ud800",
    ["a", 1, 2.5, None, False, "\x02" * 3],
    (1, "two"),
    {"key": "value", "é\n": "\U0001f600", "n": -(10**30)},
    {"nested": [1, {"deep": "x"}]},
    [[], {}],
]


@pytest.mark.parametrize("value", SAMPLES, ids=range(len(SAMPLES)))
def test_the_size_bound_never_underestimates(value):
    """What the limits compare first: exact for encoded values, an upper bound for flat
    ones (counted, not encoded); json_size is exact."""
    normalized, bound = services.storable_json_sized(value)
    exact = len(json.dumps(value))
    assert bound >= exact
    assert services.json_size(normalized) == exact


def test_the_bound_holds_for_the_longest_integers():
    digits = sys.get_int_max_str_digits()
    longest = -int("9" * digits)
    _, bound = services.storable_json_sized([longest, longest])
    assert bound >= len(json.dumps([longest, longest]))


# --- Enqueue ----------------------------------------------------------------------------------


def test_default_limit_is_one_mib():
    assert services.jobs_settings.MAX_ARGUMENTS_BYTES == MIB
    assert services.jobs_settings.MAX_RESULT_BYTES == MIB


def test_ten_megabyte_argument_is_refused_clearly_and_nothing_is_stored():
    big = "x" * (10 * MIB)
    with pytest.raises(ArgumentsTooLargeError) as caught:
        tasks.add.enqueue(big, "")
    assert str(caught.value) == (
        f"Task arguments are {stored_size([big, '']):,} bytes of JSON; "
        "MAX_ARGUMENTS_BYTES is 1,048,576."
    )
    assert caught.value.size == stored_size([big, ""])
    assert caught.value.limit == MIB
    assert isinstance(caught.value, InvalidArgumentsError)  # and so a TypeError
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (["x"], {}),  # flat ASCII
        (["\x01"], {}),  # control characters take 6 bytes each
        (["é"], {"k": 1}),  # non-ASCII: 6 bytes each
        ([{"nested": ["x"]}], {}),  # not flat: encoded
        ([], {"payload": "\U0001f600"}),  # 12 bytes each
    ],
    ids=["ascii", "control", "non-ascii", "nested", "astral"],
)
def test_exactly_at_the_limit_is_accepted_one_byte_more_refused(limits, args, kwargs):
    """The limit is inclusive; an ASCII argument pads the call to land on it exactly."""
    limit = 4096
    limits(MAX_ARGUMENTS_BYTES=limit)

    def build(extra):
        base = stored_size([*args, ""], kwargs)
        call = [*args, "p" * (limit - base + extra)]
        assert stored_size(call, kwargs) == limit + extra
        return services.build_job(
            args=call,
            kwargs=kwargs,
            task_path="tests.tasks.add",
            queue_name="default",
            priority=0,
            run_after=None,
            backend="default",
            options=services.resolve_options("default"),
            now=timezone.now(),
        )

    assert len(build(0).args) == len(args) + 1
    with pytest.raises(ArgumentsTooLargeError, match=r"4,097 bytes of JSON; .* is 4,096\."):
        build(1)


def test_at_the_default_limit_through_the_backend():
    pad = "y" * (MIB - stored_size(["", ""]))
    result = tasks.add.enqueue(pad, "")
    assert stored_size([pad, ""]) == MIB
    assert Job.objects.get(pk=result.id).args == [pad, ""]
    with pytest.raises(ArgumentsTooLargeError, match="1,048,577 bytes"):
        tasks.add.enqueue(pad, "z")
    assert Job.objects.count() == 1


def test_kwargs_count_towards_the_limit(limits):
    limits(MAX_ARGUMENTS_BYTES=1000)
    with pytest.raises(ArgumentsTooLargeError):
        tasks.add.enqueue(a="x" * 600, b="y" * 600)
    assert not Job.objects.exists()


def test_none_disables_the_limit(limits):
    limits(MAX_ARGUMENTS_BYTES=None)
    result = tasks.add.enqueue("x" * (2 * MIB), "")
    assert len(Job.objects.get(pk=result.id).args[0]) == 2 * MIB


def test_bulk_enqueue_over_the_limit_stores_none_of_the_jobs():
    calls = [(tasks.add, (i, i), {}) for i in range(50)]
    calls.insert(25, (tasks.add, ("x" * (2 * MIB), ""), {}))
    with pytest.raises(ArgumentsTooLargeError, match="MAX_ARGUMENTS_BYTES is 1,048,576"):
        enqueue_many(calls)
    assert not Job.objects.exists()
    enqueue_many([(tasks.add, ("x" * (MIB // 2), ""), {}), (tasks.add, (1, 2), {})])
    assert Job.objects.count() == 2


def test_unique_task_over_the_limit_is_refused():
    with pytest.raises(ArgumentsTooLargeError):
        tasks.unique_add.enqueue("x" * (2 * MIB), "")
    assert not Job.objects.exists()


def test_api_callback_over_the_limit_is_a_400_on_the_payload(api, users, limits, http_server):
    limits(MAX_ARGUMENTS_BYTES=10_000)
    client = api(users["client"])
    body = {"callback_url": f"{http_server.url}/ok", "payload": {"text": "x" * 20_000}}
    response = client.post("/jobs/", body, format="json")
    assert response.status_code == 400, response.content
    (message,) = response.json()["payload"]
    assert "bytes of JSON; MAX_ARGUMENTS_BYTES is 10,000" in message
    assert not Job.objects.exists()
    body["payload"] = {"text": "x" * 1000}
    assert client.post("/jobs/", body, format="json").status_code == 202


# --- Results ----------------------------------------------------------------------------------


def test_oversized_result_fails_at_once_naming_size_and_limit(runner, limits):
    limits(MAX_RESULT_BYTES=10_000)
    result = tasks.returns_text.enqueue(20_000)
    ok = tasks.returns_text.enqueue(10_000 - 2)  # exactly at the limit
    runner().drain()
    job = Job.objects.get(pk=result.id)
    assert job.status == JobStatus.FAILED
    assert job.attempts == 1  # not retried: a re-run returns as much
    assert job.return_value is None
    attempt = job.attempt_set.get()
    assert attempt.error_class == "asyncjobs.exceptions.ResultTooLargeError"
    assert attempt.error_message == (
        "Task tests.tasks.returns_text returned 20,002 bytes of JSON; MAX_RESULT_BYTES is 10,000."
    )
    assert Job.objects.get(pk=ok.id).status == JobStatus.SUCCEEDED


def test_async_task_results_are_bounded_too(runner, limits):
    limits(MAX_RESULT_BYTES=3)
    result = tasks.async_add.enqueue("ab", "cd")
    runner().drain()
    attempt = Job.objects.get(pk=result.id).attempt_set.get()
    assert attempt.error_class == "asyncjobs.exceptions.ResultTooLargeError"


def test_result_limit_none_disables_it(runner, limits):
    limits(MAX_RESULT_BYTES=None)
    result = tasks.returns_text.enqueue(2 * MIB)
    runner().drain()
    assert len(Job.objects.get(pk=result.id).return_value) == 2 * MIB


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_oversized_result_in_a_worker_process(worker_process):
    result = tasks.returns_text.enqueue(2 * MIB)
    small = tasks.returns_text.enqueue(10)
    worker = worker_process("--burst", "--concurrency", "2")
    assert worker.wait(60) == 0, worker.output()
    job = Job.objects.get(pk=result.id)
    assert job.status == JobStatus.FAILED
    assert job.attempts == 1
    attempt = job.attempt_set.get()
    assert attempt.error_class == "asyncjobs.exceptions.ResultTooLargeError"
    assert f"returned {2 * MIB + 2:,} bytes of JSON; MAX_RESULT_BYTES is 1,048,576" in (
        attempt.error_message
    )
    assert Job.objects.get(pk=small.id).status == JobStatus.SUCCEEDED
    assert Worker.objects.get().jobs_processed == 2


def test_progress_is_bounded(runner):
    """Progress carries numbers and a message cut at 500 characters: nothing to limit."""
    job = Job.objects.get(pk=tasks.noop.enqueue().id)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING)
    progress = services.set_progress(job.pk, current=1, total=2, message="m" * (5 * MIB))
    assert len(json.dumps(progress)) < 1000


@pytest.mark.parametrize(
    ("current", "total"), [(float("nan"), 2), (1, float("inf")), (float("-inf"), None), ("1", 2)]
)
def test_progress_refuses_what_is_not_a_finite_number(current, total):
    """NaN and infinities are not JSON: refused up front, not by the database's check."""
    job = Job.objects.get(pk=tasks.noop.enqueue().id)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING)
    with pytest.raises(ValueError, match="finite numbers"):
        services.set_progress(job.pk, current=current, total=total)
    assert Job.objects.get(pk=job.pk).progress is None


# --- Display and download ---------------------------------------------------------------------

FIVE_MB = 5 * 1000 * 1000


@pytest.fixture
def big_job(limits, runner, users):
    """A succeeded job whose argument and result are 5 MB each, stored with the limits off
    (as a job stored before they existed), owned by ``users["owner"]``."""
    limits(MAX_ARGUMENTS_BYTES=None, MAX_RESULT_BYTES=None)
    with enqueued_by(users["owner"]):
        result = tasks.add.enqueue("a" * FIVE_MB, "b")
    runner().drain()
    limits(MAX_ARGUMENTS_BYTES=MIB, MAX_RESULT_BYTES=MIB)
    job = Job.objects.get(pk=result.id)
    assert job.status == JobStatus.SUCCEEDED
    return job


def admin_user(name, *, superuser=False, perms=()):
    user = User.objects.create_user(name, password="pw", is_staff=True, is_superuser=superuser)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def test_admin_job_page_is_bounded_and_links_the_whole_values(client, big_job):
    client.force_login(admin_user("viewer", perms=("view_job",)))
    page = client.get(f"/admin/asyncjobs/job/{big_job.pk}/change/")
    assert page.status_code == 200
    assert len(page.content) < 400_000  # 10 MB of values, 64 KiB of each shown
    text = page.content.decode()
    assert text.count("Truncated: ") == 2  # the args and the result
    assert f"{len(json.dumps(big_job.args)):,} bytes of JSON" in text
    for part in ("args", "result"):
        url = f"/admin/asyncjobs/job/{big_job.pk}/json/{part}/"
        assert url in text
        download = client.get(url)
        assert download.status_code == 200
        assert download["Content-Type"] == "application/json"
        assert "attachment" in download["Content-Disposition"]
        value = json.loads(download.content)
        assert value == (big_job.args if part == "args" else big_job.return_value)
    assert f"/admin/asyncjobs/job/{big_job.pk}/json/kwargs/" not in text  # {} is shown whole
    assert json.loads(client.get(f"/admin/asyncjobs/job/{big_job.pk}/json/kwargs/").content) == {}


def test_admin_download_needs_the_view_permission(client, big_job):
    url = f"/admin/asyncjobs/job/{big_job.pk}/json/args/"
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(admin_user("nobody"))
    assert client.get(url).status_code == 403
    client.force_login(admin_user("boss", superuser=True))
    assert client.get(url).status_code == 200
    missing = "/admin/asyncjobs/job/00000000-0000-4000-8000-000000000000/json/args/"
    assert client.get(missing).status_code == 404
    assert client.get(f"/admin/asyncjobs/job/{big_job.pk}/json/secrets/").status_code == 404


def test_admin_download_of_a_result_needs_a_result(client):
    job = Job.objects.get(pk=tasks.add.enqueue(1, 2).id)
    client.force_login(admin_user("boss", superuser=True))
    assert client.get(f"/admin/asyncjobs/job/{job.pk}/json/result/").status_code == 404
    assert client.get(f"/admin/asyncjobs/job/{job.pk}/json/args/").json() == [1, 2]


def test_admin_shows_small_values_whole(client, runner):
    result = tasks.add.enqueue("left", "right")
    runner().drain()
    client.force_login(admin_user("boss", superuser=True))
    text = client.get(f"/admin/asyncjobs/job/{result.id}/change/").content.decode()
    assert "leftright" in text
    assert "Truncated" not in text


def test_api_detail_is_bounded_and_links_the_whole_result(api, users, big_job):
    token = make_token(big_job.pk)
    response = api(None).get(f"/jobs/{big_job.pk}/", {"token": token})
    assert response.status_code == 200
    assert len(response.content) < 100_000
    body = response.json()
    assert body["result"] is None
    truncated = body["result_truncated"]
    assert truncated["size"] == FIVE_MB + 3
    assert truncated["excerpt"] == json.dumps(big_job.return_value)[: 64 * 1024]
    assert truncated["url"] == f"http://testserver/jobs/{big_job.pk}/result/?token={token}"
    download = api(None).get(truncated["url"])
    assert download.status_code == 200
    assert download.json() == big_job.return_value
    # The same readers as the job: the owner and staff, not others; tokens for their job only.
    url = f"/jobs/{big_job.pk}/result/"
    assert api(users["owner"]).get(url).json() == big_job.return_value
    assert api(users["staff"]).get(url).status_code == 200
    assert api(users["other"]).get(url).status_code == 404
    assert api(None).get(url).status_code == 404
    other = Job.objects.get(pk=tasks.add.enqueue(1, 1).id)
    assert api(None).get(f"/jobs/{other.pk}/result/", {"token": token}).status_code == 404
    assert api(None).get(url, HTTP_X_JOB_TOKEN=token).status_code == 200
    # The events stream sends the same bounded form.
    events = b"".join(api(None).get(f"/jobs/{big_job.pk}/events/", {"token": token}))
    assert len(events) < 100_000


def test_api_small_results_are_whole_and_unfinished_jobs_have_none(api, users, runner):
    with enqueued_by(users["owner"]):
        done = tasks.add.enqueue(2, 3)
        waiting = tasks.add.enqueue(1, 1)
    runner().run_once()
    client = api(users["owner"])
    Job.objects.filter(pk=waiting.id).update(status=JobStatus.QUEUED)
    if Job.objects.get(pk=done.id).status != JobStatus.SUCCEEDED:
        done, waiting = waiting, done
    body = client.get(f"/jobs/{done.id}/").json()
    assert body["result"] == 5
    assert body["result_truncated"] is None
    assert client.get(f"/jobs/{done.id}/result/").json() == 5
    missing = client.get(f"/jobs/{waiting.id}/result/")
    assert missing.status_code == 404
    assert "no result" in missing.json()["detail"]


def test_display_limit_is_a_setting(api, users, limits, runner):
    limits(MAX_DISPLAY_BYTES=100)
    with enqueued_by(users["owner"]):
        result = tasks.returns_text.enqueue(500)
    runner().drain()
    body = api(users["owner"]).get(f"/jobs/{result.id}/").json()
    assert body["result"] is None
    assert body["result_truncated"]["excerpt"] == '"' + "x" * 99
    limits(MAX_DISPLAY_BYTES=None)
    body = api(users["owner"]).get(f"/jobs/{result.id}/").json()
    assert body["result"] == "x" * 500


@pytest.mark.parametrize("key", ["MAX_ARGUMENTS_BYTES", "MAX_RESULT_BYTES", "MAX_DISPLAY_BYTES"])
@pytest.mark.parametrize("value", [0, -1, "1MB", 1.5, True])
def test_size_settings_are_checked(settings, key, value):
    from asyncjobs.checks import check_settings

    settings.ASYNCJOBS = {key: value}
    (error,) = check_settings()
    assert error.id == "asyncjobs.E009" and key in error.msg
    settings.ASYNCJOBS = {key: None}
    assert check_settings() == []


def test_admin_truncates_by_the_stored_size_not_the_indented_one(client, limits):
    """Indenting makes JSON longer; a value within the limit as stored is shown whole."""
    values = list(range(100))
    limits(MAX_DISPLAY_BYTES=len(json.dumps([values, []])))  # exactly the args
    job = Job.objects.get(pk=tasks.add.enqueue(values, []).id)
    client.force_login(admin_user("boss", superuser=True))
    text = client.get(f"/admin/asyncjobs/job/{job.pk}/change/").content.decode()
    assert "Truncated" not in text
    limits(MAX_DISPLAY_BYTES=100)
    text = client.get(f"/admin/asyncjobs/job/{job.pk}/change/").content.decode()
    assert "Truncated: 396 bytes of JSON, of which the first 100 characters" in text

"""Tasks the tests enqueue. Module-level, as django.tasks requires."""

import asyncio
import os
import time
from datetime import timedelta

from django.db import connection, transaction

from asyncjobs import Fixed, Retry
from asyncjobs.tasks_api import task
from tests.models import Execution


@task()
def add(a, b):
    return a + b


@task()
def noop():
    return None


@task()
def record(label):
    Execution.objects.create(label=label, pid=os.getpid())
    return label


@task()
def record_beside_another_process(label, timeout=60):
    """Record this run, then wait (at most ``timeout`` seconds) until runs from two processes
    are recorded: two workers draining together then both take jobs, whatever their
    start-up times (a worker's slots stay busy until the other one has started a job)."""
    Execution.objects.create(label=label, pid=os.getpid())
    deadline = time.monotonic() + timeout
    while Execution.objects.values("pid").distinct().count() < 2:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return label


@task(max_attempts=3, backoff=Fixed(timedelta(seconds=5)))
def fail_always(message="boom"):
    raise ValueError(message)


@task(max_attempts=4, backoff=Fixed(0))
def flaky(label, failures):
    """Fails on its first ``failures`` runs, then succeeds."""
    Execution.objects.create(label=label, pid=os.getpid())
    if Execution.objects.filter(label=label).count() <= failures:
        raise ConnectionError(f"flaky failure for {label}")
    return "ok"


@task(max_attempts=5, fail_on=(KeyError,))
def fail_fast():
    raise KeyError("not worth retrying")


@task(max_attempts=5, retry_on=(ConnectionError,))
def wrong_kind_of_error():
    raise ValueError("not in retry_on")


@task(max_attempts=3)
def ask_retry(seconds):
    raise Retry(delay=timedelta(seconds=seconds), reason="come back later")


@task()
def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


@task(timeout=1, max_attempts=2, backoff=Fixed(0))
def busy_past_timeout(label):
    """A pure-Python loop that ignores its timeout: the watchdog must interrupt it."""
    Execution.objects.create(label=label, pid=os.getpid())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pass
    return "never"


@task(timeout=0.5, max_attempts=2, backoff=Fixed(0))
async def async_past_timeout(label):
    await asyncio.sleep(60)


@task()
async def async_add(a, b):
    await asyncio.sleep(0.01)
    return a + b


@task()
def returns_non_json(kind="object"):
    """A return value that is not JSON: an object, NaN, or nesting too deep to encode."""
    if kind == "deep":
        value: list = []
        for _ in range(100_000):
            value = [value]
        return value
    return object() if kind == "object" else {"value": float("nan")}


@task(takes_context=True)
def with_context(context, total):
    for i in range(1, total + 1):
        context.set_progress(i, total, f"step {i}")
    return {"attempt": context.attempt, "job": context.job_id}


@task(takes_context=True)
def cancellable(context, label):
    Execution.objects.create(label=label, pid=os.getpid())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        context.raise_if_cancelled()
        time.sleep(0.05)
    return "not cancelled"


@task(max_attempts=2)
def die_once(label, hold_seconds):
    """The first run records itself and then blocks (a test SIGKILLs the worker); later runs
    return at once."""
    Execution.objects.create(label=label, pid=os.getpid())
    if Execution.objects.filter(label=label).count() == 1:
        time.sleep(hold_seconds)
    return "survived"


@task(queue_name="emails", priority=10, max_attempts=5, timeout=30)
def send_welcome_email(user_id):
    return f"sent to {user_id}"


@task(unique=True)
def unique_add(a, b):
    return a + b


@task(unique=True, unique_for=60)
def unique_for_a_minute(n):
    return n


@task(queue_name="other")
def hold(seconds):
    """Runs for ``seconds`` (its attempt rows give start and end times)."""
    time.sleep(seconds)
    return seconds


@task(concurrency_limit=1)
def per_account(account, seconds=0):
    """One running job per account when enqueued with .using(concurrency_key=...)."""
    time.sleep(seconds)
    return account


@task(rate_limit="2/s")
def rated(n):
    return n


@task(queue_name="other")
def stamp(label):
    """Returns the time its first line saw (rate limits are kept at the task's start)."""
    started = time.time()
    return started


@task(rate_limit="5/s", concurrency_limit=100)
def stamp_per_key(key):
    """As ``stamp``, under a rate limit per key (``.using(concurrency_key=...)``)."""
    started = time.time()
    return started


@task(concurrency_limit=2)
def two_at_a_time(seconds):
    time.sleep(seconds)
    return seconds


@task(max_attempts=2, backoff=Fixed(0))
def exit_process(label):
    """Kills the worker process running it, as a segfaulting extension or os._exit would."""
    Execution.objects.create(label=label, pid=os.getpid())
    os._exit(13)


@task(max_attempts=2, backoff=Fixed(0))
def allocate_forever(label):
    """Takes memory until something stops it (the worker's --max-memory)."""
    Execution.objects.create(label=label, pid=os.getpid())
    hoard = []
    while True:
        hoard.append(b"\x01" * (4 << 20))  # written, so resident
        time.sleep(0.005)


@task(max_attempts=2, backoff=Fixed(0))
def raise_base(kind, label="base"):
    """Raises a BaseException that is not an Exception, as hostile task code may."""
    Execution.objects.create(label=label, pid=os.getpid())
    errors = {
        "SystemExit": SystemExit("task called sys.exit"),
        "KeyboardInterrupt": KeyboardInterrupt("task raised KeyboardInterrupt"),
        "GeneratorExit": GeneratorExit("task raised GeneratorExit"),
    }
    raise errors[kind]


@task(max_attempts=2, backoff=Fixed(0))
def raise_text(message):
    """Raises a ValueError whose message (and so traceback) holds ``message``, with <NUL>
    and <SURROGATE> made a NUL character and an unpaired surrogate."""
    raise ValueError(hostile(message))


def hostile(text):
    return text.replace("<NUL>", "\x00").replace("<SURROGATE>", "\ud800")


@task(max_attempts=2, backoff=Fixed(0), takes_context=True)
def progress_text(context, message):
    context.set_progress(1, 2, hostile(message))
    return "ok"


@task(max_attempts=3, backoff=Fixed(0))
def echo(value):
    return value


class FakeResponse:
    def __init__(self, status_code):
        self.status_code = status_code


class FakeHTTPStatusError(Exception):
    """Shaped like httpx's and requests' errors: the response rides on the exception."""

    def __init__(self, status_code):
        super().__init__(f"Server error '{status_code}'")
        self.response = FakeResponse(status_code)


@task(max_attempts=1)
def raise_http(kind, status=503):
    """Raises an error carrying an HTTP status the way HTTP libraries do."""
    if kind == "response":
        raise FakeHTTPStatusError(status)
    if kind == "urllib":
        import io
        import urllib.error

        raise urllib.error.HTTPError("http://example.invalid/", status, "no", {}, io.BytesIO())
    if kind == "cause":
        try:
            raise FakeHTTPStatusError(status)
        except FakeHTTPStatusError as exc:
            raise RuntimeError("the CRM refused the update") from exc
    raise ValueError("no HTTP status here")


class UnreadableResponseError(Exception):
    """An error whose ``response`` raises when read."""

    response = property(lambda self: 1 / 0)


def huge_backoff(attempt):
    """A backoff that asks for 31,700 years."""
    return 10**12


@task(max_attempts=2, backoff=huge_backoff)
def raise_hostile(kind):
    """Raises what made the failure's own write raise: an error whose attributes raise, a
    ``Retry`` past ``datetime.max``, or (``backoff``) a plain error under a huge backoff."""
    if kind == "response":
        raise UnreadableResponseError("the real error")
    if kind == "retry":
        raise Retry(delay=10**12, reason="in 31,700 years")
    if kind == "retry-inf":
        raise Retry(delay=float("inf"))
    raise ValueError("the real error")


@task(takes_context=True)
def started_at_while_running(context):
    """Returns the started_at that get_result reports while this job runs."""
    result = started_at_while_running.get_result(context.task_result.id)
    return result.started_at.isoformat()


@task(max_attempts=3)
def returns_text(size):
    """Returns a string of ``size`` characters: ``size + 2`` bytes of JSON."""
    return "x" * size


@task()
def sleep_recorded(label, seconds):
    """Records that its slot began it, then sleeps: tests that signal a worker mid-job wait
    for the record (a job is `running` from its claim, before a slot may have started it)."""
    Execution.objects.create(label=label, pid=os.getpid())
    time.sleep(seconds)
    return seconds


@task()
def query_then_sleep(label, seconds):
    """One query, then a wait with the connection still open (the "load the record, call the
    API" task)."""
    Execution.objects.create(label=label, pid=os.getpid())
    time.sleep(seconds)
    return label


REFUSAL_MESSAGE = (
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
    "FATAL:  sorry, too many clients already"
)


@task(max_attempts=1)
def refused_once(label):
    """On its first run, fails as a task does when the server refuses it a connection
    (PostgreSQL's message, as Django raises it); then succeeds."""
    from django.db import OperationalError

    Execution.objects.create(label=label, pid=os.getpid())
    if Execution.objects.filter(label=label).count() == 1:
        raise OperationalError(REFUSAL_MESSAGE)
    return "ok"


@task(max_attempts=1)
def connect_as(label, user):
    """On its first run, opens a second connection to the same database as ``user`` (whom
    the server refuses: a connection limit), through Django; then succeeds."""
    from django.db import connections

    Execution.objects.create(label=label, pid=os.getpid())
    if Execution.objects.filter(label=label).count() > 1:
        return "ok"
    default = connections["default"]
    settings = {**default.settings_dict, "USER": user, "PASSWORD": ""}
    other = type(default)(settings, "refusal-probe")
    try:
        other.ensure_connection()
    finally:
        other.close()
    return "connected"


# async_together's jobs meet here: every one of a worker's async tasks runs on its one loop.
_together: dict[str, list[int]] = {}


@task()
async def async_together(label, expected):
    """Waits (10 s at most) until ``expected`` tasks of ``label`` are running at once, then
    returns how many it saw and the id of the event loop it ran on."""
    import threading

    seen = _together.setdefault(label, [])
    seen.append(threading.get_ident())
    deadline = asyncio.get_running_loop().time() + 10
    while len(seen) < expected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    return {"seen": len(seen), "loop_thread": threading.get_ident()}


@task(takes_context=True)
async def async_cancellable(context, label):
    """Runs on the worker's event loop until it is asked to cancel."""
    await Execution.objects.acreate(label=label, pid=os.getpid())
    while True:
        context.raise_if_cancelled()
        await asyncio.sleep(0.05)


@task(max_attempts=1)
def leave_transaction_open(how, label):
    """Writes a row inside a transaction it never ends, as careless task code may: autocommit
    turned off, an atomic() entered and not left, or a raw BEGIN."""
    if how == "autocommit":
        transaction.set_autocommit(False)
    elif how == "atomic":
        transaction.atomic().__enter__()
    else:
        with connection.cursor() as cursor:
            cursor.execute("BEGIN")
    Execution.objects.create(label=label, pid=os.getpid())
    return "done"


class _UnprintableError(Exception):
    def __str__(self):
        raise KeyboardInterrupt("from __str__")


@task(max_attempts=1)
def raise_unprintable():
    """Raises an error whose str() raises KeyboardInterrupt (while the worker records it)."""
    raise _UnprintableError

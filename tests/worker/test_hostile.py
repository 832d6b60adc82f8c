"""Hostile task code is contained to its attempt (issue: worker robustness). Each test runs
a real ``runworker`` subprocess on the test database, SQLite or PostgreSQL."""

import signal
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from asyncjobs import Fixed, Retry, db, services
from asyncjobs.models import Attempt, Job, JobStatus
from asyncjobs.retry import MAX_DELAY
from tests import tasks
from tests.conftest import wait_until
from tests.models import Execution


def finished(*results):
    ids = [r.id for r in results]
    return lambda: (
        Job.objects.filter(pk__in=ids, status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED]).count()
        == len(ids)
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_base_exceptions_fail_their_attempt_and_the_slot_lives_on(worker_process):
    """SystemExit, KeyboardInterrupt and GeneratorExit from task code: each attempt is a
    recorded failure, retried by the default policy; a worker of one slot goes on to the
    next job, and SIGTERM stops it within its grace period."""
    hostile = [
        tasks.raise_base.enqueue(kind, label=kind)
        for kind in ("SystemExit", "KeyboardInterrupt", "GeneratorExit")
    ]
    after = tasks.add.enqueue(2, 3)
    worker = worker_process("--concurrency", "1", "--shutdown-timeout", "5")
    wait_until(finished(*hostile, after), timeout=30, message="every job to finish")
    kinds = ("SystemExit", "KeyboardInterrupt", "GeneratorExit")
    for result, kind in zip(hostile, kinds, strict=True):
        job = Job.objects.get(pk=result.id)
        assert job.status == JobStatus.FAILED
        assert job.attempts == 2
        attempts = list(Attempt.objects.filter(job=job).order_by("number"))
        assert [a.error_class for a in attempts] == [f"builtins.{kind}"] * 2
        assert all(a.finished_at is not None for a in attempts)
        assert "task" in attempts[0].error_message
        assert kind in attempts[0].traceback
    assert Job.objects.get(pk=after.id).status == JobStatus.SUCCEEDED
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    assert "slot thread died" not in worker.output()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_nul_and_unpaired_surrogates_in_errors_are_recorded(worker_process):
    """A message with NUL blocked recording on PostgreSQL for a minute, then the job was
    rescued from a live worker and ran past max_attempts. Now the text is stored escaped,
    each job ends after exactly max_attempts, and a worker of one slot is not held up."""
    hostile = [
        tasks.raise_text.enqueue("bad<NUL>byte"),
        tasks.raise_text.enqueue("lone <SURROGATE> surrogate"),
        tasks.progress_text.enqueue("progress <NUL> with NUL <SURROGATE>"),
    ]
    after = tasks.add.enqueue(2, 3)
    worker = worker_process("--concurrency", "1")
    wait_until(finished(*hostile, after), timeout=30, message="every job to finish")
    nul, surrogate, progress = (Job.objects.get(pk=r.id) for r in hostile)
    for job in (nul, surrogate):
        assert job.status == JobStatus.FAILED
        assert job.attempts == 2
        assert Attempt.objects.filter(job=job).count() == 2
        assert job.last_error_class == "builtins.ValueError"
    assert nul.last_error_message == "bad\\x00byte"
    assert surrogate.last_error_message == "lone \\ud800 surrogate"
    attempt = Attempt.objects.filter(job=nul).first()
    assert "bad\\x00byte" in attempt.traceback
    assert progress.status == JobStatus.SUCCEEDED
    assert progress.progress["message"] == "progress \\x00 with NUL \\ud800"
    assert Job.objects.get(pk=after.id).status == JobStatus.SUCCEEDED
    output = worker.output()
    assert "while recording" not in output
    assert "rescued" not in output


REFUSE_SQL = {
    # A database that refuses a value the way PostgreSQL refused NUL: a data error on the
    # write of the outcome, not a lost connection.
    "postgresql": [
        """CREATE FUNCTION asyncjobs_test_refuse() RETURNS trigger AS $$
        BEGIN
            IF NEW.return_value::text LIKE '%refuse-me%'
               OR NEW.last_error_message LIKE '%refuse-me%' THEN
                RAISE EXCEPTION 'value refused by the test' USING ERRCODE = '22000';
            END IF;
            RETURN NEW;
        END $$ LANGUAGE plpgsql""",
        """CREATE TRIGGER asyncjobs_test_refuse BEFORE UPDATE ON asyncjobs_job
        FOR EACH ROW EXECUTE FUNCTION asyncjobs_test_refuse()""",
    ],
    "sqlite": [
        """CREATE TRIGGER asyncjobs_test_refuse BEFORE UPDATE ON asyncjobs_job
        WHEN NEW.return_value LIKE '%refuse-me%' OR NEW.last_error_message LIKE '%refuse-me%'
        BEGIN SELECT RAISE(ABORT, 'value refused by the test'); END""",
    ],
    # MYSQL_ERRNO 1406 (data too long): a data error to the driver (DataError), as a real
    # refusal of a value would be.
    "mysql": [
        """CREATE TRIGGER asyncjobs_test_refuse BEFORE UPDATE ON asyncjobs_job
        FOR EACH ROW BEGIN
            IF NEW.return_value LIKE '%refuse-me%' OR NEW.last_error_message LIKE '%refuse-me%'
            THEN
                SIGNAL SQLSTATE '22001'
                    SET MYSQL_ERRNO = 1406, MESSAGE_TEXT = 'value refused by the test';
            END IF;
        END""",
    ],
}
UNREFUSE_SQL = {
    "postgresql": [
        "DROP TRIGGER asyncjobs_test_refuse ON asyncjobs_job",
        "DROP FUNCTION asyncjobs_test_refuse()",
    ],
    "sqlite": ["DROP TRIGGER asyncjobs_test_refuse"],
    "mysql": ["DROP TRIGGER asyncjobs_test_refuse"],
}


@pytest.fixture
def refusing_database(transactional_db):
    with connection.cursor() as cursor:
        for sql in REFUSE_SQL[connection.vendor]:
            cursor.execute(sql)
    yield
    with connection.cursor() as cursor:
        for sql in UNREFUSE_SQL[connection.vendor]:
            cursor.execute(sql)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_outcome_the_database_refuses_ends_the_attempt(worker_process, refusing_database):
    """A data error while recording is not retried as if the connection were lost: the
    attempt ends with the bare facts (OutcomeNotStoredError), a refused result fails the job
    at once, the other successes of its batch are recorded, and nothing stays running."""
    refused_result = tasks.echo.enqueue("refuse-me")
    refused_error = tasks.raise_text.enqueue("refuse-me")
    others = [tasks.add.enqueue(i, i) for i in range(5)]
    worker = worker_process("--concurrency", "2")
    wait_until(finished(refused_result, refused_error, *others), timeout=30, message="every job")
    job = Job.objects.get(pk=refused_result.id)
    assert job.status == JobStatus.FAILED
    assert job.attempts == 1
    assert job.last_error_class == "asyncjobs.exceptions.OutcomeNotStoredError"
    assert "return value could not be stored" in job.last_error_message
    job = Job.objects.get(pk=refused_error.id)
    assert job.status == JobStatus.FAILED
    assert job.attempts == 2
    assert job.last_error_class == "asyncjobs.exceptions.OutcomeNotStoredError"
    assert "builtins.ValueError could not be stored as raised" in job.last_error_message
    assert all(Job.objects.get(pk=r.id).status == JobStatus.SUCCEEDED for r in others)
    assert not Attempt.objects.filter(finished_at__isnull=True).exists()
    assert "retrying in" not in worker.output()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("kind", "expected"), [("response", 503), ("urllib", 503), ("cause", 503), ("none", None)]
)
def test_the_http_status_of_a_raised_error_is_recorded(runner, kind, expected):
    result = tasks.raise_http.enqueue(kind)
    runner().drain()
    attempt = Attempt.objects.get(job_id=result.id)
    assert attempt.http_status == expected


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("status", [-5, 70_000, True, "503"])
def test_an_impossible_http_status_is_not_recorded(runner, status):
    result = tasks.raise_http.enqueue("response", status)
    runner().drain()
    assert Attempt.objects.get(job_id=result.id).http_status is None


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_transaction_left_open_is_rolled_back_before_the_next_job(worker_process):
    """A task that returns inside a transaction it never ended: its outcome and the next
    jobs' writes went into that transaction, never committed (on SQLite, behind a write
    lock nobody released). Now the worker rolls it back, the attempt fails with
    TransactionLeftOpenError, and the next job on the same slot writes as usual."""
    ways = ["autocommit", "atomic"]
    if connection.vendor in ("postgresql", "sqlite"):  # (MySQLdb cannot tell a raw BEGIN)
        ways.append("begin")
    jobs = []
    for how in ways:
        jobs.append((how, tasks.leave_transaction_open.enqueue(how, f"inside-{how}")))
        jobs.append((how, tasks.record.enqueue(f"after-{how}")))
    failing = tasks.raise_text.enqueue("the real error")
    worker = worker_process("--concurrency", "1")
    wait_until(finished(*[r for _, r in jobs], failing), timeout=60, message=f"{worker.output()}")
    for how, result in jobs[::2]:
        job = Job.objects.get(pk=result.id)
        assert job.status == JobStatus.FAILED, how
        assert job.last_error_class == "asyncjobs.exceptions.TransactionLeftOpenError", how
    labels = set(Execution.objects.values_list("label", flat=True))
    assert labels >= {f"after-{how}" for how in ways}
    assert not labels & {f"inside-{how}" for how in ways}  # rolled back
    assert all(Job.objects.get(pk=r.id).status == JobStatus.SUCCEEDED for _, r in jobs[1::2])
    # A failure after them is recorded as itself, not lost to a leftover transaction.
    assert Attempt.objects.filter(job_id=failing.id, error_message__contains="real error").exists()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_error_whose_str_raises_keyboard_interrupt_fails_its_attempt_only(worker_process):
    """Formatting the error's traceback calls its __str__; one raising KeyboardInterrupt
    killed the slot thread, and its job stayed running while the worker lived."""
    hostile = tasks.raise_unprintable.enqueue()
    after = tasks.add.enqueue(2, 3)
    worker = worker_process("--concurrency", "1")
    wait_until(finished(hostile, after), timeout=30, message=f"{worker.output()}")
    job = Job.objects.get(pk=hostile.id)
    assert job.status == JobStatus.FAILED
    assert job.last_error_class == "tests.tasks._UnprintableError"
    assert Job.objects.get(pk=after.id).status == JobStatus.SUCCEEDED
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert "slot thread died" not in worker.output()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("kind", "error_class", "status"),
    [
        ("response", "tests.tasks.UnreadableResponseError", JobStatus.QUEUED),
        ("retry", "asyncjobs.exceptions.Retry", JobStatus.SCHEDULED),
        ("retry-inf", "asyncjobs.exceptions.Retry", JobStatus.SCHEDULED),
        ("backoff", "builtins.ValueError", JobStatus.SCHEDULED),
    ],
)
def test_hostile_errors_and_delays_are_recorded(runner, kind, error_class, status):
    """An error whose ``response`` raises when read, ``Retry(delay=10**12)`` and a backoff of
    10**12 s made the failure's write raise (ZeroDivisionError, OverflowError): the error
    was lost and the job stayed running until its lease expired. Now the attempt is
    recorded and the retry scheduled at most a year ahead (``retry.MAX_DELAY``)."""
    result = tasks.raise_hostile.using(
        backoff=Fixed(0) if kind == "response" else tasks.huge_backoff
    ).enqueue(kind)
    before = timezone.now()
    runner().run_once()
    job = Job.objects.get(pk=result.id)
    attempt = Attempt.objects.get(job=job)
    assert (job.status, job.last_error_class) == (status, error_class)
    assert (attempt.error_class, attempt.finished_at is not None) == (error_class, True)
    assert attempt.http_status is None
    if status == JobStatus.SCHEDULED:
        assert before + timedelta(days=364) < job.run_after <= timezone.now() + MAX_DELAY


class UnreadableClassError(Exception):
    __class__ = property(lambda self: 1 / 0)  # isinstance() reads it


class UnreadableCauseError(Exception):
    __cause__ = property(lambda self: 1 / 0)


class FalsehoodError(Exception):
    def __bool__(self):
        raise RuntimeError("no truth value")


class HostileMeta(type):
    pass


class UnreadableModuleError(Exception, metaclass=HostileMeta):
    pass


HostileMeta.__module__ = property(lambda cls: 1 / 0)  # type: ignore[assignment]


class UnreadableDelay(Retry):
    delay = property(lambda self: 1 / 0, lambda self, value: None)


def _caused_by_falsehood():
    error = ValueError("the real error")
    error.__cause__ = FalsehoodError()
    return error


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("make", "error_class", "status"),
    [
        (lambda: UnreadableClassError("x"), "UnreadableClassError", JobStatus.FAILED),
        (lambda: UnreadableCauseError("x"), "UnreadableCauseError", JobStatus.QUEUED),
        (_caused_by_falsehood, "builtins.ValueError", JobStatus.QUEUED),
        (lambda: UnreadableModuleError("x"), "<unknown>", JobStatus.QUEUED),
        (lambda: UnreadableDelay(), "UnreadableDelay", JobStatus.QUEUED),
    ],
)
def test_errors_whose_attributes_raise_are_recorded(make, error_class, status):
    """Whatever the failure's write reads from an error (``__class__`` through isinstance,
    ``__cause__``, ``__bool__``, its class's ``__module__``, a ``Retry``'s ``delay``, the
    traceback) may raise: the attempt is recorded all the same. An error the retry policy
    cannot be checked against fails the job (``fail_on`` wins over everything)."""
    result = tasks.add.using(max_attempts=2, backoff=Fixed(0)).enqueue(1, 2)
    job = services.claim_job(
        result.id, worker_id="w", now=timezone.now(), lease=timedelta(seconds=60)
    )
    error = make()
    assert not db.is_too_many_connections(error)  # (the executor asks first)
    assert services.record_failure(job, worker_id="w", error=error, now=timezone.now()) == status
    job.refresh_from_db()
    attempt = Attempt.objects.get(job=job)
    assert job.status == status
    assert attempt.finished_at is not None
    assert attempt.error_class.endswith(error_class)
    assert attempt.traceback

"""System checks and settings resolution."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from asyncjobs.checks import check_backend, check_settings
from asyncjobs.conf import jobs_settings
from asyncjobs.retry import Fixed
from asyncjobs.services import resolve_options
from asyncjobs.tasks_api import task_backends


def ids(messages):
    return sorted(m.id for m in messages)


def test_clean_settings_have_no_messages():
    assert check_settings() == []


def test_unknown_keys_and_bad_values(settings):
    settings.ASYNCJOBS = {
        "MAX_ATEMPTS": 3,
        "QUEUES": {"emails": {"TIMEOUT": 5, "COLOR": "red"}, "bad": {"MAX_ATTEMPTS": 0}},
    }
    assert ids(check_settings()) == ["asyncjobs.E002", "asyncjobs.E004", "asyncjobs.E005"]


@pytest.mark.parametrize(
    ("key", "value"),
    [("WORKER_PREFETCH", -1), ("WORKER_PREFETCH", "64"), ("WORKER_MAX_MEMORY", 0)],
)
def test_worker_numbers_must_be_integers_in_range(settings, key, value):
    settings.ASYNCJOBS = {key: value}
    (error,) = check_settings()
    assert error.id == "asyncjobs.E009" and key in error.msg


def test_runworker_keeps_the_level_the_project_set(settings):
    import logging

    from asyncjobs.management.commands.runworker import Command

    logger, root = logging.getLogger("asyncjobs"), logging.getLogger()
    saved = logger.level, list(logger.handlers), list(root.handlers)
    try:
        root.handlers.clear()  # (pytest's capture handlers)
        logger.handlers.clear()
        logger.setLevel(logging.WARNING)
        Command()._configure_logging(verbosity=2)
        assert logger.level == logging.WARNING and logger.handlers
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        Command()._configure_logging(verbosity=2)
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(saved[0])
        logger.handlers[:], root.handlers[:] = saved[1], saved[2]


def test_lease_shorter_than_two_heartbeats_warns(settings):
    settings.ASYNCJOBS = {"LEASE_DURATION": 10, "HEARTBEAT_INTERVAL": 8}
    assert ids(check_settings()) == ["asyncjobs.W001"]


def test_backend_checks(settings):
    settings.TASKS = {
        "default": {
            "BACKEND": "asyncjobs.backend.JobsBackend",
            "QUEUES": ["default"],
            "OPTIONS": {"DATABASE": "missing"},
        }
    }
    assert ids(check_backend(task_backends["default"])) == ["asyncjobs.E011"]


@pytest.mark.sqlite
def test_sqlite_without_immediate_warns(monkeypatch):
    from django.db import connections

    options = {**connections["default"].settings_dict["OPTIONS"]}
    options.pop("transaction_mode")
    monkeypatch.setitem(connections["default"].settings_dict, "OPTIONS", options)
    assert ids(check_backend(task_backends["default"])) == ["asyncjobs.W010"]


@pytest.mark.mysql
@pytest.mark.parametrize("level", ["repeatable read", "SERIALIZABLE", None])
def test_mysql_above_read_committed_warns(monkeypatch, level):
    from django.db import connections

    options = {**connections["default"].settings_dict["OPTIONS"], "isolation_level": level}
    monkeypatch.setitem(connections["default"].settings_dict, "OPTIONS", options)
    assert ids(check_backend(task_backends["default"])) == ["asyncjobs.W012"]


@pytest.mark.mysql
def test_mysql_read_committed_by_default_is_fine(monkeypatch):
    from django.db import connections

    options = {**connections["default"].settings_dict["OPTIONS"]}
    options.pop("isolation_level")
    monkeypatch.setitem(connections["default"].settings_dict, "OPTIONS", options)
    assert ids(check_backend(task_backends["default"])) == []


def test_queue_options_unknown_to_the_backend_warn(settings):
    settings.ASYNCJOBS = {"QUEUES": {"ghost": {"MAX_ATTEMPTS": 2}}}
    assert ids(check_backend(task_backends["default"])) == ["asyncjobs.W011"]


def test_options_resolve_task_then_queue_then_global(settings):
    settings.ASYNCJOBS = {
        "MAX_ATTEMPTS": 7,
        "TIMEOUT": 60,
        "QUEUES": {"emails": {"MAX_ATTEMPTS": 2, "BACKOFF": Fixed(1)}},
    }
    assert resolve_options("default").max_attempts == 7
    assert resolve_options("emails").max_attempts == 2
    assert resolve_options("emails").backoff == Fixed(1)
    assert resolve_options("emails").timeout == timedelta(seconds=60)
    assert resolve_options("emails", max_attempts=9).max_attempts == 9
    assert resolve_options("emails", retry_on=(OSError,)).retry_on == ("builtins.OSError",)


def test_settings_reload_on_change(settings):
    settings.ASYNCJOBS = {"POLL_INTERVAL": 3}
    assert timedelta(seconds=3) == jobs_settings.POLL_INTERVAL
    settings.ASYNCJOBS = {}
    assert timedelta(seconds=1) == jobs_settings.POLL_INTERVAL
    with pytest.raises(AttributeError):
        _ = jobs_settings.NOT_A_SETTING


@pytest.mark.django_db
def test_runworker_rejects_bad_arguments():
    with pytest.raises(CommandError, match="not in TASKS"):
        call_command("runworker", "--queue", "nope", "--burst")
    with pytest.raises(CommandError, match="invalid"):
        call_command("runworker", "--concurrency", "0")
    with pytest.raises(CommandError):
        call_command("runworker", "--backend", "missing", "--burst")


@pytest.mark.django_db(transaction=True)
def test_runworker_burst_in_process():
    from asyncjobs.models import Job, JobStatus
    from tests import tasks

    result = tasks.add.enqueue(1, 1)
    call_command("runworker", "--burst", "--concurrency", "2", "--poll-interval", "0.1")
    assert Job.objects.get(pk=result.id).status == JobStatus.SUCCEEDED


@pytest.mark.parametrize(
    "values", [{"POOL_MODE": "statement"}, {"LISTEN_DATABASE": "nowhere"}], ids=["mode", "listen"]
)
def test_pool_settings_are_checked(settings, values):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, **values}
    assert ids(check_settings()) == ["asyncjobs.E013"]

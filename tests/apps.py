import atexit
import os
import threading

from django.apps import AppConfig


class TestsConfig(AppConfig):
    name = "tests"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        path = os.environ.get("ASYNCJOBS_TEST_COUNT_STATEMENTS")
        if path:
            count_sqlite_statements(path)


def count_sqlite_statements(path):
    """Count every SQL statement this process runs on SQLite (BEGIN and COMMIT included,
    raw cursors included) and write the count to ``path`` at exit. Worker subprocesses
    of the idle-spin tests use it where PostgreSQL's pg_stat_database is not available."""
    from django.db.backends.signals import connection_created

    lock = threading.Lock()
    count = [0]

    def traced(_statement):
        with lock:
            count[0] += 1

    def on_connect(sender, connection, **kwargs):
        if connection.vendor == "sqlite":
            connection.connection.set_trace_callback(traced)

    def write():
        with open(path, "w") as out:
            out.write(str(count[0]))

    connection_created.connect(on_connect, weak=False)
    atexit.register(write)

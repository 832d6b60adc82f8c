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
            count_statements(path)


def count_statements(path):
    """Count every SQL statement this process runs on SQLite (BEGIN and COMMIT included,
    raw cursors included) or on MariaDB/MySQL (every statement through Django's cursors,
    the only ones asyncjobs uses there; commits are not statements) and write the count to
    ``path`` at exit. Worker subprocesses of the idle-spin tests use it where PostgreSQL's
    pg_stat_database is not available."""
    from django.db.backends.signals import connection_created

    lock = threading.Lock()
    count = [0]

    def traced(_statement):
        with lock:
            count[0] += 1

    def counted(execute, sql, params, many, context):
        traced(sql)
        return execute(sql, params, many, context)

    def on_connect(sender, connection, **kwargs):
        if connection.vendor == "sqlite":
            connection.connection.set_trace_callback(traced)
        elif connection.vendor == "mysql" and counted not in connection.execute_wrappers:
            connection.execute_wrappers.append(counted)

    def write():
        with open(path, "w") as out:
            out.write(str(count[0]))

    connection_created.connect(on_connect, weak=False)
    atexit.register(write)

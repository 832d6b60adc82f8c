"""CPU seconds per job by kind of process, read from /proc, so that the figure holds on a
loaded machine (a process's CPU time does not grow because others want the cores).

``CpuMeter.read()`` takes a reading: the utime+stime of the worker processes (by pid), of
this process (the soak's client threads), of the PostgreSQL backends serving each
(``pg_stat_activity.application_name``: bench/settings.py names the connections after
BENCH_APP_NAME), the database's committed transactions (``pg_stat_database.xact_commit``),
the job table's index scans (each claim, empty or not, is one), and, where the server loads
``pg_stat_statements``, the calls of each statement. ``per_job(before, after, jobs)`` turns
two readings into milliseconds (or counts) per job. Linux only; the database on this
machine (its backends' /proc entries are read).
"""

import os
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WORKER_APP = "asyncjobs-bench-worker"
CLIENT_APP = "asyncjobs-bench-client"


def process_cpu(pid: int) -> float:
    """utime + stime of ``pid`` (every thread), in seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CpuMeter:
    """Readings of the CPU and the statements spent on a run's jobs (see the module)."""

    def __init__(self, worker_pids: list[int]) -> None:
        self.worker_pids = worker_pids
        self.statements = self._has_pg_stat_statements()
        # Backends seen, by pid: their last CPU reading, so that one that disappears
        # between two readings keeps what it had used (its last reading).
        self._backends: dict[int, tuple[str, float]] = {}

    @staticmethod
    def _has_pg_stat_statements() -> bool:
        from django.db import DatabaseError, connection, transaction

        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                cursor.execute("SELECT 1 FROM pg_stat_statements LIMIT 1")
        except DatabaseError:
            return False
        return True

    def read(self) -> dict[str, Any]:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT pid, application_name FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name IN (%s, %s)",
                [WORKER_APP, CLIENT_APP],
            )
            for pid, app in cursor.fetchall():
                self._backends[pid] = (app, 0.0)
            cursor.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            )
            commits = cursor.fetchone()[0]
            cursor.execute(
                "SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0) FROM pg_stat_user_tables"
                " WHERE relname = 'asyncjobs_job'"
            )
            scans = cursor.fetchone()[0]
            calls: dict[str, int] = {}
            if self.statements:
                cursor.execute(
                    "SELECT query, calls FROM pg_stat_statements"
                    " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
                for text, count in cursor.fetchall():
                    key = " ".join(text.split())[:90]
                    calls[key] = calls.get(key, 0) + count
        for pid, (app, last) in list(self._backends.items()):
            now = process_cpu(pid)
            self._backends[pid] = (app, max(now, last))
        pg = {WORKER_APP: 0.0, CLIENT_APP: 0.0}
        for app, seconds in self._backends.values():
            pg[app] += seconds
        return {
            "workers": sum(process_cpu(pid) for pid in self.worker_pids),
            "clients": process_cpu(os.getpid()),
            "pg_workers": pg[WORKER_APP],
            "pg_clients": pg[CLIENT_APP],
            "commits": commits,
            "job_scans": scans,
            "calls": calls,
        }

    @staticmethod
    def per_job(before: dict[str, Any], after: dict[str, Any], jobs: int) -> dict[str, Any]:
        """Milliseconds of CPU per job of each kind, commits and job-table scans per job, and
        the statements called at least 0.05 times per job (most first)."""
        jobs = max(jobs, 1)
        result: dict[str, Any] = {
            f"{key}_cpu_ms": (after[key] - before[key]) * 1000 / jobs
            for key in ("workers", "clients", "pg_workers", "pg_clients")
        }
        result["commits"] = (after["commits"] - before["commits"]) / jobs
        result["job_scans"] = (after["job_scans"] - before["job_scans"]) / jobs
        calls = {
            text: (count - before["calls"].get(text, 0)) / jobs
            for text, count in after["calls"].items()
        }
        result["statements"] = dict(
            sorted(((t, round(c, 3)) for t, c in calls.items() if c >= 0.05), key=lambda i: -i[1])
        )
        return result


def cost_line(cost: dict[str, Any]) -> str:
    return (
        f"CPU ms/job: workers {cost['workers_cpu_ms']:.2f}, their PG backends "
        f"{cost['pg_workers_cpu_ms']:.2f}; clients {cost['clients_cpu_ms']:.2f}, their PG "
        f"backends {cost['pg_clients_cpu_ms']:.2f}; commits/job {cost['commits']:.2f}, "
        f"job-table scans/job {cost['job_scans']:.2f}"
    )

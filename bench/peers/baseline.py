"""The baseline of the peer comparison: asyncjobs' own table, worked by hand with the bare
driver (psycopg on PostgreSQL, mysqlclient on MariaDB/MySQL), which is what the database and
its driver cost on the machine at hand.

    python -m bench.peers.baseline URL [--poll 0.2] [--batch 64] [--pooled]

runs one baseline worker: it claims up to ``--batch`` ready jobs per transaction in claim
order (``FOR UPDATE SKIP LOCKED``; on PostgreSQL one ``UPDATE … WHERE id IN (SELECT …)
RETURNING``, on MariaDB/MySQL a locking ``SELECT`` then an ``UPDATE``), calls each no-op
task's latency probe, marks them succeeded in one ``UPDATE`` and, when it found nothing,
waits: on PostgreSQL (not ``--pooled``) for the notification asyncjobs' insert trigger sends
on its channel (``LISTEN`` on the same connection, at most ``--poll`` seconds), elsewhere
``--poll`` seconds. No attempt rows, leases, heartbeats or retries: a floor, not a queue.
SIGTERM ends it where it stands.
"""

import argparse
import json
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from bench import latency

ORDER = "priority DESC, run_after, enqueued_at"
# asyncjobs' notification channel (asyncjobs.db.base.NOTIFY_CHANNEL), which its insert trigger
# announces new jobs on.
CHANNEL = "asyncjobs"


def is_mysql(url: str) -> bool:
    return urlsplit(url).scheme in ("mysql", "mariadb")


def connect(url: str, *, pooled: bool = False) -> Any:
    """An autocommit connection to the database ``url`` names. ``pooled``: through a
    transaction pooler, so no prepared statements (PgBouncer before 1.21 has none)."""
    if is_mysql(url):
        import MySQLdb

        parts = urlsplit(url)
        conn = MySQLdb.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=parts.path.lstrip("/"),
            charset="utf8mb4",
            autocommit=True,
        )
        # As example_project.database asks of Django's connections (see there why).
        conn.cursor().execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        return conn
    import psycopg

    return psycopg.connect(url, autocommit=True, prepare_threshold=None if pooled else 5)


def now_like(template: Any) -> datetime:
    """The time now, naive (UTC) where the driver hands out naive times (mysqlclient)."""
    now = datetime.now(UTC)
    return now if template is None or template.tzinfo else now.replace(tzinfo=None)


def new_id(template: Any) -> Any:
    """A new job id in the template's form (a UUID, or its 32 hex digits on MySQL)."""
    value = uuid.uuid4()
    if isinstance(template, str):
        return str(value) if "-" in template else value.hex
    return value


class Worker:
    """One baseline worker on one connection."""

    def __init__(self, url: str, *, batch: int, pooled: bool) -> None:
        self.mysql = is_mysql(url)
        self.conn = connect(url, pooled=pooled)
        self.batch = batch
        self.name = f"baseline-{os.getpid()}"
        # Woken by asyncjobs' notify trigger, as an asyncjobs worker is (not through a
        # transaction pooler, where a session's LISTEN hears nothing for sure).
        self.listening = not self.mysql and not pooled
        if self.listening:
            self.conn.execute(f"LISTEN {CHANNEL}")

    def claim(self) -> list[tuple[Any, Any]]:
        """Up to ``batch`` ready jobs, moved to running: (id, kwargs) pairs."""
        if not self.mysql:
            return self.conn.execute(
                "UPDATE asyncjobs_job SET status = 'running', worker_id = %s, "
                "started_at = %s, attempts = attempts + 1 WHERE id IN ("
                "SELECT id FROM asyncjobs_job WHERE status = 'queued' AND limit_key = '' "
                f"AND queue_name = 'default' ORDER BY {ORDER} LIMIT %s "
                "FOR UPDATE SKIP LOCKED) RETURNING id, kwargs",
                (self.name, datetime.now(UTC), self.batch),
            ).fetchall()
        cursor = self.conn.cursor()
        cursor.execute("BEGIN")
        try:
            # The schema's claim index, read in claim order, so that InnoDB locks only the
            # rows it returns (asyncjobs' own claim forces it for the same reason).
            cursor.execute(
                "SELECT id, kwargs FROM asyncjobs_job FORCE INDEX (asyncjobs_job_claim_m) "
                "WHERE status = 'queued' AND limit_key = '' AND queue_name = 'default' "
                f"ORDER BY {ORDER} LIMIT %s FOR UPDATE SKIP LOCKED",
                (self.batch,),
            )
            rows = list(cursor.fetchall())
            if rows:
                cursor.execute(
                    "UPDATE asyncjobs_job SET status = 'running', worker_id = %s, "
                    "started_at = %s, attempts = attempts + 1 WHERE id IN "
                    f"({', '.join(['%s'] * len(rows))})",
                    (self.name, now_like(None), *(row[0] for row in rows)),
                )
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        return rows

    def finish(self, ids: list[Any]) -> None:
        """Mark ``ids`` succeeded, in one statement (autocommit)."""
        now = datetime.now(UTC) if not self.mysql else now_like(None)
        placeholders = ", ".join(["%s"] * len(ids))
        self.conn.cursor().execute(
            "UPDATE asyncjobs_job SET status = 'succeeded', finished_at = %s "
            f"WHERE id IN ({placeholders})",
            (now, *ids),
        )

    def run(self, poll: float) -> None:
        while True:
            rows = self.claim()
            if not rows:
                if self.listening:
                    # (Notifications that came during the claim are yielded at once.)
                    for _ in self.conn.notifies(timeout=poll, stop_after=1):
                        pass
                else:
                    time.sleep(poll)
                continue
            for _, kwargs in rows:
                if isinstance(kwargs, str | bytes):
                    kwargs = json.loads(kwargs)
                latency.record((kwargs or {}).get("enqueued_at"))
            self.finish([row[0] for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="postgres://... or mysql://... of the jobs' database")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between idle looks")
    parser.add_argument("--batch", type=int, default=64, help="jobs claimed per transaction")
    parser.add_argument("--pooled", action="store_true", help="through a transaction pooler")
    args = parser.parse_args()
    Worker(args.url, batch=args.batch, pooled=args.pooled).run(args.poll)


if __name__ == "__main__":
    main()

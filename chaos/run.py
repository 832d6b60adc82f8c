"""Chaos run: prove that asyncjobs loses no job while its workers and database misbehave.

    python chaos/run.py [--jobs 5000] [--workers 3] [--kill-every 2] [--work-ms 30]

Enqueues ``--jobs`` jobs (each records every execution in the ``chaos_execution`` table, then
works for ``--work-ms``), runs ``--workers`` worker processes, SIGKILLs one at random every
``--kill-every`` seconds (±50%) and starts a replacement, crashes and restarts PostgreSQL once
(``-m immediate``: no checkpoint, so claims committed without waiting for their WAL flush, as
they are by default, may be lost; see ``DURABLE_CLAIMS``) and terminates every worker
connection once (``pg_terminate_backend``), then checks:

- every job succeeded, none is lost, none is left running;
- every execution of a job matches an attempt row, exactly one attempt succeeded, and every
  other execution is explained by a lost, failed or timed-out attempt;
- the workers still alive have a live heartbeat.

Prints a summary, writes it to chaos/results/latest.json, and exits 1 on any violation.
PostgreSQL only (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/asyncjobs_chaos; the
database is recreated). The restart uses --restart-command (default: pg_ctlcluster on the
local cluster); --no-restart skips it where the server is not ours to restart.
"""

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chaos.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/asyncjobs_chaos")

from bench.common import recreate_database  # noqa: E402

EXPLAINED = {"lost", "failed", "timed_out"}


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def default_restart_command() -> str:
    clusters = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not clusters:
        return ""
    return f"pg_ctlcluster --skip-systemctl-redirect {clusters[-1]} main restart -m immediate"


def with_retry(what: str, action: Callable[[], Any], give_up: float = 120.0) -> Any:
    """Run ``action``, retrying while the database is down (it is restarted on purpose)."""
    from django.db import DatabaseError, InterfaceError, connection

    deadline = time.monotonic() + give_up
    while True:
        try:
            return action()
        except (DatabaseError, InterfaceError) as exc:
            if time.monotonic() > deadline:
                raise
            log(f"{what}: database unavailable ({type(exc).__name__}); retrying")
            connection.close()
            time.sleep(0.5)


# CHAOS_POOLED_URL: the workers reach the database through a connection pooler in
# transaction mode (scripts/chaos.sh --pooled starts a PgBouncer); the run itself (setup,
# connection kills, checks) stays on DATABASE_URL, the server directly.
POOLED_ENV = (
    {"DATABASE_URL": os.environ["CHAOS_POOLED_URL"], "ASYNCJOBS_CHAOS_POOLER": "transaction"}
    if os.environ.get("CHAOS_POOLED_URL")
    else {}
)


class Workers:
    """The worker processes: start, kill at random, replace."""

    def __init__(self, count: int, concurrency: int, logs: Path) -> None:
        self.count, self.concurrency, self.logs = count, concurrency, logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0
        self.killed = 0
        self.exits: Counter[int] = Counter()

    def start_one(self) -> None:
        self.started += 1
        out = (self.logs / f"worker-{self.started}.log").open("wb")
        self.procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "django",
                    "runworker",
                    "--concurrency",
                    str(self.concurrency),
                ],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), **POOLED_ENV},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )

    def fill(self) -> None:
        """Replace workers that exited by themselves (they should not)."""
        for proc in list(self.procs):
            if proc.poll() is not None:
                self.exits[proc.returncode] += 1
                self.procs.remove(proc)
        while len(self.procs) < self.count:
            self.start_one()

    def kill_one(self) -> int:
        victim = random.choice(self.procs)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        self.procs.remove(victim)
        self.killed += 1
        self.start_one()
        return victim.pid

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def terminate_worker_connections() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def progress() -> dict[str, int]:
    from django.db.models import Count

    from asyncjobs.models import Job

    rows = Job.objects.values("status").annotate(n=Count("id")).order_by()
    return {row["status"]: row["n"] for row in rows}


def verify(expected: int, alive_pids: list[int]) -> tuple[list[str], dict[str, Any]]:
    """Check every invariant; return (violations, figures)."""
    from django.db import connection
    from django.utils import timezone

    from asyncjobs.conf import jobs_settings
    from asyncjobs.models import Attempt, Job, Worker

    violations: list[str] = []
    jobs = dict(Job.objects.filter(task_path="chaos.tasks.step").values_list("id", "status"))
    statuses = Counter(jobs.values())
    if len(jobs) != expected:
        violations.append(f"{len(jobs)} jobs in the table, {expected} enqueued")
    for status, n in statuses.items():
        if status != "succeeded":
            violations.append(f"{n} jobs ended {status}, not succeeded")

    attempts: dict[Any, dict[int, str]] = defaultdict(dict)
    for job_id, number, outcome in Attempt.objects.values_list("job_id", "number", "outcome"):
        attempts[job_id][number] = outcome
    executions: dict[Any, list[int]] = defaultdict(list)
    with connection.cursor() as cursor:
        cursor.execute("SELECT job_id, attempt FROM chaos_execution")
        for job_id, attempt in cursor.fetchall():
            executions[job_id].append(attempt)

    never_ran = [j for j in jobs if not executions.get(j)]
    if never_ran:
        violations.append(f"{len(never_ran)} jobs have no recorded execution")
    duplicates = explained = 0
    for job_id, runs in executions.items():
        recorded = attempts.get(job_id, {})
        if job_id not in jobs:
            violations.append(f"execution of unknown job {job_id}")
            continue
        for number in runs:
            if number not in recorded:
                violations.append(f"job {job_id}: execution of attempt {number} has no attempt row")
        succeeded = [n for n, outcome in recorded.items() if outcome == "succeeded"]
        if len(succeeded) != 1:
            violations.append(f"job {job_id}: {len(succeeded)} succeeded attempts")
            continue
        if len(runs) != len(set(runs)):
            violations.append(f"job {job_id}: attempt numbers ran twice: {sorted(runs)}")
        extra = [n for n in runs if n != succeeded[0]]
        if extra:
            duplicates += 1
            unexplained = [n for n in extra if recorded.get(n) not in EXPLAINED]
            if unexplained:
                violations.append(
                    f"job {job_id}: re-run after attempts {unexplained} that are not recorded "
                    "as lost, failed or timed out"
                )
            else:
                explained += 1
        open_attempts = [n for n, outcome in recorded.items() if not outcome]
        if open_attempts:
            violations.append(f"job {job_id}: attempts {open_attempts} never closed")

    stale_after = timezone.now() - 3 * jobs_settings.HEARTBEAT_INTERVAL
    for pid in alive_pids:
        row = Worker.objects.filter(pid=pid).order_by("-started_at").first()
        if row is None:
            violations.append(f"live worker pid {pid} has no worker row")
        elif row.status != "running" or row.last_heartbeat_at < stale_after:
            violations.append(
                f"live worker pid {pid} is {row.status}, last heartbeat {row.last_heartbeat_at}"
            )

    outcomes = Counter(o for per_job in attempts.values() for o in per_job.values())
    figures = {
        "jobs": len(jobs),
        "executions": sum(len(r) for r in executions.values()),
        "attempts": sum(outcomes.values()),
        "attempt_outcomes": dict(outcomes),
        "jobs_run_more_than_once": duplicates,
        "duplicates_explained": explained,
    }
    return violations, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--work-ms", type=int, default=30)
    parser.add_argument("--kill-every", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after (s)")
    parser.add_argument("--restart-command", default=default_restart_command())
    parser.add_argument("--no-restart", action="store_true")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if os.environ["DATABASE_URL"].startswith("sqlite"):
        parser.error("the chaos run needs PostgreSQL")
    if not args.no_restart and not args.restart_command:
        parser.error(
            "no PostgreSQL cluster found to restart: give --restart-command or --no-restart"
        )
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    random.seed(seed)

    recreate_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from asyncjobs import enqueue_many
    from chaos.tasks import step

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE chaos_execution (id bigserial PRIMARY KEY, job_id uuid NOT NULL, "
            "n integer NOT NULL, attempt integer NOT NULL, pid integer NOT NULL, "
            "at timestamptz NOT NULL DEFAULT now())"
        )
    logs = ROOT / "chaos" / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("worker-*.log"):
        old.unlink()

    log(
        f"{args.jobs} jobs, {args.workers} workers x {args.concurrency} slots, "
        f"kill every ~{args.kill_every}s, seed {seed}"
    )
    batches = [range(i, min(i + 500, args.jobs)) for i in range(0, args.jobs, 500)]
    enqueue_many([(step, (n, args.work_ms), {}) for n in batches.pop(0)])
    workers = Workers(args.workers, args.concurrency, logs)
    workers.fill()
    start = time.monotonic()
    restart_at = None if args.no_restart else start + 4 * args.kill_every + random.uniform(0, 1)
    terminate_at = start + 2 * args.kill_every + random.uniform(0, 1)
    next_kill = start + args.kill_every * random.uniform(0.5, 1.5)
    events: list[str] = []
    drained_at = None
    last: dict[str, int] = {}
    last_print = 0.0
    while time.monotonic() - start < args.timeout:
        now = time.monotonic()
        if batches:
            batch = batches.pop(0)
            with_retry(
                "enqueue", lambda b=batch: enqueue_many([(step, (n, args.work_ms), {}) for n in b])
            )
        if now >= next_kill:
            pid = workers.kill_one()
            events.append(f"{now - start:6.1f}s SIGKILL worker pid {pid}")
            next_kill = now + args.kill_every * random.uniform(0.5, 1.5)
        if terminate_at is not None and now >= terminate_at:
            n = with_retry("terminate", terminate_worker_connections)
            events.append(f"{now - start:6.1f}s pg_terminate_backend: {n} connections")
            terminate_at = None
        if restart_at is not None and now >= restart_at:
            began = time.monotonic()
            subprocess.run(shlex.split(args.restart_command), check=True)
            connection.close()
            events.append(
                f"{now - start:6.1f}s PostgreSQL restarted ({time.monotonic() - began:.1f}s)"
            )
            restart_at = None
        workers.fill()
        counts = with_retry("progress", progress)
        if counts != last and now - last_print >= 1.0:
            log(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
            last, last_print = counts, now
        if (
            not batches
            and counts.get("succeeded", 0) + counts.get("failed", 0) >= args.jobs
            and restart_at is None
            and terminate_at is None
        ):
            drained_at = time.monotonic() - start
            break
        time.sleep(0.2)
    for event in events:
        log(event)
    time.sleep(2)  # let the survivors beat at least once after the last kill
    alive = [p.pid for p in workers.procs if p.poll() is None]
    violations, figures = with_retry("verify", lambda: verify(args.jobs, alive))
    workers.fill()
    if workers.exits:
        violations.append(f"workers exited by themselves: {dict(workers.exits)}")
    workers.stop()
    if drained_at is None:
        violations.append(f"the queue did not drain within {args.timeout:.0f}s")
    summary = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "settings": {
            "jobs": args.jobs,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "work_ms": args.work_ms,
            "kill_every_s": args.kill_every,
            "lease_s": 4,
        },
        "workers_killed": workers.killed,
        "workers_started": workers.started,
        "events": events,
        "seconds_to_drain": round(drained_at, 1) if drained_at is not None else None,
        **figures,
        "violations": violations[:50],
        "violation_count": len(violations),
    }
    out = ROOT / "chaos" / "results" / "latest.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print(f"jobs                     {figures['jobs']}")
    print(f"executions               {figures['executions']}")
    print(f"attempts                 {figures['attempts']}  {figures['attempt_outcomes']}")
    print(
        f"jobs run more than once  {figures['jobs_run_more_than_once']}  "
        f"(explained by a lost/failed attempt: {figures['duplicates_explained']})"
    )
    print(f"workers killed           {workers.killed}")
    print(f"time to drain            {summary['seconds_to_drain']} s")
    if violations:
        print(f"\nFAILED: {len(violations)} violations")
        for line in violations[:50]:
            print(f"  - {line}")
        return 1
    print("\nOK: no job lost, every re-run explained, no job stuck, survivors healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How the operator pages answer with a big table: 1,000,000 jobs on PostgreSQL.

    python bench/admin_scale.py [--jobs 1000000] [--runs 5]

Creates (afresh) the database ``asyncjobs_bench_admin``, fills it with one INSERT … SELECT
(90% succeeded, 5% failed over 20 tasks and 5 error classes, 3% queued, 2% scheduled, and an
attempt for each failed job), ANALYZEs it, then times each page through Django's test client
as a logged-in superuser: the job changelist (unfiltered and filtered), a job page, the
dead-letter page, the dashboard and its refresh fragment, the metrics endpoint and
``GET /jobs/stats/``. Prints medians in ms and writes bench/results/admin-<time>.json.
"""

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DATABASE_URL"] = os.environ.get(
    "BENCH_ADMIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/asyncjobs_bench_admin"
)
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
os.environ.pop("ASYNCJOBS_DB_NAME", None)

FILL_SQL = """
INSERT INTO asyncjobs_job (
    id, backend, task_path, args, kwargs, queue_name, priority, status, enqueued_at, run_after,
    started_at, last_attempted_at, finished_at, attempts, max_attempts, free_attempts, backoff,
    retry_on, fail_on, return_value, last_error_class, last_error_message, worker_id,
    webhook_url, limit_key, limit_rate)
SELECT
    gen_random_uuid(), 'default', 'bench.tasks.task_' || (g %% 20), '[1, 2]', '{}',
    (ARRAY['default', 'emails', 'low'])[1 + g %% 3], 0,
    CASE WHEN g %% 100 < 90 THEN 'succeeded' WHEN g %% 100 < 95 THEN 'failed'
         WHEN g %% 100 < 98 THEN 'queued' ELSE 'scheduled' END,
    now() - (g || ' seconds')::interval,
    CASE WHEN g %% 100 >= 98 THEN now() + interval '1 hour'
         ELSE now() - (g || ' seconds')::interval END,
    CASE WHEN g %% 100 < 95 THEN now() - (g || ' seconds')::interval END,
    CASE WHEN g %% 100 < 95 THEN now() - (g || ' seconds')::interval END,
    CASE WHEN g %% 100 < 95 THEN now() - (g || ' seconds')::interval + interval '50 ms' END,
    CASE WHEN g %% 100 < 95 THEN 1 ELSE 0 END, 3, 0, '{}', '[]', '[]',
    CASE WHEN g %% 100 < 90 THEN '3'::jsonb END,
    CASE WHEN g %% 100 BETWEEN 90 AND 94 THEN 'builtins.Error' || (g %% 5) ELSE '' END,
    CASE WHEN g %% 100 BETWEEN 90 AND 94 THEN 'failure number ' || g ELSE '' END,
    '', '', '', ''
FROM generate_series(1, %s) AS g;
INSERT INTO asyncjobs_attempt (job_id, number, worker_id, started_at, finished_at, outcome,
    error_class, error_message, traceback)
SELECT id, 1, 'bench', started_at, finished_at, 'failed', last_error_class, last_error_message, ''
FROM asyncjobs_job WHERE status = 'failed';
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from bench.common import recreate_database

    recreate_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    call_command("migrate", verbosity=0)
    from django.contrib.auth.models import User

    from asyncjobs.models import Job

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(FILL_SQL, [args.jobs])
        cursor.execute("VACUUM ANALYZE asyncjobs_job")
        cursor.execute("VACUUM ANALYZE asyncjobs_attempt")
    fill_seconds = time.perf_counter() - started
    user = User.objects.create_superuser("bench", password="bench")
    client = Client()
    client.force_login(user)
    job_id = Job.objects.filter(status="failed").values_list("pk", flat=True).first()
    pages = {
        "job changelist": "/admin/asyncjobs/job/",
        "job changelist, status=failed": "/admin/asyncjobs/job/?status__exact=failed",
        "job changelist, search by id": f"/admin/asyncjobs/job/?q={job_id}",
        "job page": f"/admin/asyncjobs/job/{job_id}/change/",
        "dead-letter page": "/admin/asyncjobs/job/dead-letter/",
        "dashboard": "/admin/asyncjobs/dashboard/",
        "dashboard refresh fragment": "/admin/asyncjobs/dashboard/?fragment=1",
        "metrics": "/metrics/",
        "API /jobs/stats/": "/jobs/stats/",
    }
    results = {}
    for name, url in pages.items():
        times = []
        for _ in range(args.runs + 1):
            t = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - t) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{name}: HTTP {response.status_code}")
        results[name] = {"median_ms": statistics.median(times[1:]), "max_ms": max(times[1:])}
        print(f"{name:34} {results[name]['median_ms']:8.1f} ms (max {results[name]['max_ms']:.1f})")
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "jobs": args.jobs,
        "fill_seconds": fill_seconds,
        "runs": args.runs,
        "pages": results,
    }
    out = ROOT / "bench" / "results" / f"admin-{report['when'].replace(':', '')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"filled {args.jobs:,} jobs in {fill_seconds:.1f} s; results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The chaos run's task: record that this attempt ran, then work for a while."""

import os
import time
from datetime import timedelta

from django.db import connection

from asyncjobs import Fixed
from asyncjobs.tasks_api import task


@task(takes_context=True, max_attempts=50, backoff=Fixed(timedelta(milliseconds=200)))
def step(context, n, work_ms):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO chaos_execution (job_id, n, attempt, pid) VALUES (%s, %s, %s, %s)",
            [context.job_id, n, context.attempt, os.getpid()],
        )
    time.sleep(work_ms / 1000)
    return n

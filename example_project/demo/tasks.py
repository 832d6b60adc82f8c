"""Demo tasks: what a web app moves out of its requests."""

import random
import time
from datetime import timedelta

from django.core.mail import send_mail
from django.tasks import task

from asyncjobs import Exponential, Fixed


@task(queue_name="emails", priority=10, max_attempts=5, timeout=30)
def send_welcome_email(user_id: int) -> str:
    """Send a welcome email (to the console backend in the demo)."""
    send_mail(
        "Welcome!",
        f"Hello user {user_id}, thanks for signing up.",
        "noreply@example.com",
        [f"user{user_id}@example.com"],
    )
    return f"sent to user {user_id}"


@task(max_attempts=5, backoff=Exponential(base=timedelta(seconds=1), cap=timedelta(seconds=10)))
def sync_crm(user_id: int) -> dict:
    """Push a user to a CRM that fails about a third of the time: watch the retries."""
    time.sleep(0.2)
    if random.random() < 0.33:
        raise ConnectionError("CRM answered 503 Service Unavailable")
    return {"user_id": user_id, "crm_id": f"crm-{user_id}"}


@task(queue_name="reports", takes_context=True, timeout=120)
def build_report(context, rows: int) -> dict:
    """A long job that reports progress and can be cancelled between steps."""
    for done in range(1, rows + 1):
        context.raise_if_cancelled()
        time.sleep(0.05)
        if done % 10 == 0 or done == rows:
            context.set_progress(done, rows, f"{done} of {rows} rows")
    return {"rows": rows, "url": f"/reports/{context.job_id}.csv"}


@task(max_attempts=3, backoff=Fixed(timedelta(seconds=2)))
def always_fails(reason: str) -> None:
    """Ends in the dead letter after three attempts."""
    raise RuntimeError(reason)

"""The demo's tasks: the work a web app moves out of its requests.

Every task is idempotent, because asyncjobs runs a job at least once (a job whose worker
died mid-way runs again): each checks what is already done before doing it.
"""

import csv
import hashlib
import os
import time
from datetime import timedelta
from pathlib import Path

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from asyncjobs import Exponential, Fixed, batch
from asyncjobs.tasks_api import task
from example_project.demo.models import AnalyticsEvent, Order, Product, Profile


class OutOfStock(Exception):
    """Retrying will not help: the job fails at once (``fail_on``)."""


def demo_url(name: str, **kwargs: object) -> str:
    """An absolute URL of the demo's own fake services (the CRM, the partner API)."""
    return settings.DEMO_BASE_URL.rstrip("/") + reverse(name, kwargs=kwargs or None)


def media_path(*parts: str) -> Path:
    path = Path(settings.MEDIA_ROOT, *parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --- sign-up fan-out -------------------------------------------------------------------------


@task(queue_name="emails", priority=10, max_attempts=5, timeout=30)
def send_welcome_email(user_id: int) -> str:
    """Welcome email through Django's email framework (console backend in the demo)."""
    user = get_user_model().objects.get(pk=user_id)
    send_mail(
        "Welcome to the demo!",
        f"Hello {user.username}, thanks for signing up.",
        "noreply@example.com",
        [user.email],
    )
    return f"sent to {user.email}"


@task(max_attempts=5)
def provision_account(user_id: int) -> dict:
    """Create the user's profile and workspace (idempotent: get_or_create)."""
    time.sleep(0.3)  # a slow internal service
    profile, _ = Profile.objects.get_or_create(user_id=user_id)
    if profile.provisioned_at is None:
        profile.provisioned_at = timezone.now()
        profile.save(update_fields=["provisioned_at"])
    return {"profile": profile.pk}


# Without jitter, so that the gaps read plainly in the admin: 3 s, 6 s, 12 s, 24 s, 48 s.
# (Production tasks keep the default full jitter, which spreads out retries of jobs that
# failed together.)
CRM_BACKOFF = Exponential(
    base=timedelta(seconds=3), factor=2, cap=timedelta(seconds=60), jitter=False
)


@task(max_attempts=6, backoff=CRM_BACKOFF, timeout=15)
def sync_crm(user_id: int) -> dict:
    """Push the user to the CRM, a deliberately flaky local endpoint (fails about a third of
    the time): watch the retries and the backoff in the admin, 3 s, then 6 s, 12 s..."""
    user = get_user_model().objects.get(pk=user_id)
    response = httpx.post(
        demo_url("demo:fake-crm"), json={"user_id": user.pk, "email": user.email}, timeout=5
    )
    response.raise_for_status()  # a 503 raises: the attempt fails and is retried
    crm_id = response.json()["crm_id"]
    Profile.objects.update_or_create(user_id=user_id, defaults={"crm_id": crm_id})
    return {"crm_id": crm_id}


def draw_identicon(seed: str, size: int = 256) -> "object":
    """A 5x5 symmetric identicon (Pillow), the kind of CPU work nobody should wait for."""
    from PIL import Image, ImageDraw, ImageFilter

    digest = hashlib.sha256(seed.encode()).digest()
    colour = (digest[0], digest[1], digest[2])
    image = Image.new("RGB", (size, size), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    cell = size // 6
    margin = (size - 5 * cell) // 2
    for row in range(5):
        for col in range(3):
            if digest[3 + row * 3 + col] % 2:
                for c in {col, 4 - col}:
                    x, y = margin + c * cell, margin + row * cell
                    draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour)
    return image.filter(ImageFilter.SMOOTH_MORE)


@task(max_attempts=3, timeout=60)
def generate_avatar(user_id: int) -> dict:
    """Render the user's avatar to MEDIA_ROOT/avatars/<id>.png."""
    user = get_user_model().objects.get(pk=user_id)
    relative = f"avatars/{user.pk}.png"
    draw_identicon(user.username).save(media_path(relative), format="PNG")
    Profile.objects.update_or_create(user_id=user_id, defaults={"avatar": relative})
    return {"avatar": settings.MEDIA_URL + relative}


@task(queue_name="emails", priority=-10)
def notify_team(user_id: int) -> str:
    """Tell the team about the new user (low priority: after the welcome emails)."""
    user = get_user_model().objects.get(pk=user_id)
    send_mail(
        f"New sign-up: {user.username}",
        f"{user.username} <{user.email}> just signed up.",
        "noreply@example.com",
        ["team@example.com"],
    )
    return "team notified"


SIGNUP_TASKS = (send_welcome_email, provision_account, sync_crm, generate_avatar, notify_team)


@task(queue_name="emails")
def signup_complete(batch_id: str, summary: dict) -> int:
    """The sign-up batch's ``on_complete``: all five jobs finished (however each ended).
    Records one analytics event per batch (idempotent: a second run finds it)."""
    existing = AnalyticsEvent.objects.filter(name="signup_complete", payload__batch=batch_id)
    if existing.exists():
        return existing.first().pk
    return AnalyticsEvent.objects.create(
        name="signup_complete", payload={"batch": batch_id, **summary}
    ).pk


def start_signup(user_id: int) -> tuple[batch, list]:
    """The sign-up fan-out: the five follow-up jobs of user ``user_id`` as one batch, with
    ``signup_complete`` once all five are done. Call it in the user's own transaction."""
    with batch(on_complete=signup_complete, description=f"Sign-up of user {user_id}") as fan_out:
        results = fan_out.enqueue_many([(t, (user_id,), {}) for t in SIGNUP_TASKS])
    return fan_out, results


# --- checkout --------------------------------------------------------------------------------


@task(queue_name="emails", priority=10, max_attempts=5)
def send_receipt(order_id: int) -> str:
    order = Order.objects.select_related("product").get(pk=order_id)
    if order.receipt_sent_at is not None:
        return "already sent"
    send_mail(
        f"Your receipt for order #{order.pk}",
        f"{order.quantity} x {order.product.name}: {order.total_cents / 100:.2f} EUR.",
        "shop@example.com",
        [order.email],
    )
    Order.objects.filter(pk=order.pk).update(receipt_sent_at=timezone.now())
    return f"receipt sent to {order.email}"


@task(max_attempts=5, fail_on=(OutOfStock,))
def reserve_inventory(order_id: int) -> dict:
    """Take the order's items from stock, once (a conditional UPDATE guards both the stock
    and the order against a second run)."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.reserved:
            return {"reserved": True, "again": True}
        taken = Product.objects.filter(pk=order.product_id, stock__gte=order.quantity).update(
            stock=F("stock") - order.quantity
        )
        if not taken:
            raise OutOfStock(f"not enough {order.product_id} in stock for order {order.pk}")
        Order.objects.filter(pk=order.pk).update(reserved=True)
    return {"reserved": True}


@task(queue_name="default", priority=-50)
def track_event(name: str, payload: dict) -> int:
    """An analytics event: lowest priority, nobody waits for it."""
    return AnalyticsEvent.objects.create(name=name, payload=payload).pk


# --- report: a batch of chunks --------------------------------------------------------------

# Rows per chunk job: a report of 200 rows is a batch of 8 jobs, which several worker slots
# (or workers) build side by side.
REPORT_CHUNK_ROWS = 25


def report_folder(batch_id: object) -> Path:
    """Where the chunks of report ``batch_id`` are written, one file each."""
    path = media_path("reports", str(batch_id), "x")
    return path.parent


def report_file(batch_id: object) -> Path:
    """The assembled report: ``MEDIA_ROOT/reports/<batch id>.csv``."""
    return media_path("reports", f"{batch_id}.csv")


@task(queue_name="reports", takes_context=True, timeout=300, backoff=Fixed(timedelta(seconds=5)))
def build_report_chunk(context, first: int, last: int, fail_first_attempt: bool = False) -> dict:
    """Rows ``first`` to ``last`` of a report, written to a file of their own (the same file
    on a re-run: idempotent); can be cancelled between rows. With ``fail_first_attempt`` the
    first attempt fails half-way (to show a retry)."""
    folder = report_folder(context.batch_id)
    part = folder / f"part-{first:06d}.csv"
    scratch = folder / f".part-{first:06d}.{context.attempt}"
    with scratch.open("w", newline="") as out:
        writer = csv.writer(out)
        for row in range(first, last + 1):
            context.raise_if_cancelled()
            time.sleep(0.02)
            writer.writerow([row, row * 7 % 101, row * row])
            if fail_first_attempt and context.attempt == 1 and row == (first + last) // 2:
                raise ConnectionError("the data warehouse dropped the connection")
    scratch.replace(part)  # a chunk's file is whole or absent
    return {"rows": last - first + 1}


def assemble_report(batch_id: object) -> Path:
    """Join the chunks of report ``batch_id`` into one CSV, once (idempotent: the file is
    written aside and renamed into place, so a reader never sees half of it)."""
    final = report_file(batch_id)
    if final.exists():
        return final
    scratch = final.with_suffix(f".{os.getpid()}.tmp")
    with scratch.open("w", newline="") as out:
        out.write("row,value,square\r\n")
        for part in sorted(report_folder(batch_id).glob("part-*.csv")):
            out.write(part.read_text())
    scratch.replace(final)
    return final


@task(queue_name="reports")
def report_done(batch_id: str, summary: dict) -> dict:
    """The report batch's ``on_success`` callback: assemble the file while the visitor
    watches the bar reach 100% (the download assembles it too if they are faster)."""
    return {"file": assemble_report(batch_id).name, "chunks": summary["succeeded"]}


def start_report(rows: int, *, fail_first_attempt: bool = False) -> batch:
    """Enqueue a report of ``rows`` rows: a batch of chunk jobs (one ``COPY`` on
    PostgreSQL), sealed in the same transaction, with ``report_done`` once all succeed."""
    chunks = [
        (first, min(first + REPORT_CHUNK_ROWS - 1, rows))
        for first in range(1, rows + 1, REPORT_CHUNK_ROWS)
    ]
    flaky_chunk = len(chunks) // 2
    with batch(on_success=report_done, description=f"Report of {rows} rows") as report:
        report.enqueue_many(
            [
                (
                    build_report_chunk,
                    (first, last),
                    {"fail_first_attempt": fail_first_attempt and i == flaky_chunk},
                )
                for i, (first, last) in enumerate(chunks)
            ]
        )
    return report


# --- rate-limited partner API ----------------------------------------------------------------


@task(queue_name="partner", max_attempts=5)
def call_partner(item: int) -> dict:
    """One call to a partner API that allows a few calls per second: the ``partner`` queue's
    RATE_LIMIT keeps us under it, across every worker."""
    response = httpx.get(demo_url("demo:fake-partner", item=item), timeout=5)
    response.raise_for_status()
    return response.json()


# --- dead letter -----------------------------------------------------------------------------


@task(max_attempts=3, backoff=Fixed(timedelta(seconds=2)))
def always_fails(reason: str) -> None:
    """Ends in the dead letter after three attempts."""
    raise RuntimeError(reason)

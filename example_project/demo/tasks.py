"""The demo's tasks: the work a web app moves out of its requests.

Every task is idempotent, because asyncjobs runs a job at least once (a job whose worker
died mid-way runs again): each checks what is already done before doing it.
"""

import csv
import hashlib
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

from asyncjobs import Exponential, Fixed
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


# --- report ----------------------------------------------------------------------------------


@task(queue_name="reports", takes_context=True, timeout=300, backoff=Fixed(timedelta(seconds=5)))
def build_report(context, rows: int, fail_first_attempt: bool = False) -> dict:
    """A long report: writes a CSV row by row, reporting progress; can be cancelled between
    steps. With ``fail_first_attempt`` its first attempt fails half-way (to show a retry)."""
    path = media_path("reports", f"{context.job_id}.csv")
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["row", "value", "square"])
        for done in range(1, rows + 1):
            context.raise_if_cancelled()
            time.sleep(0.02)
            writer.writerow([done, done * 7 % 101, done * done])
            if done % 10 == 0 or done == rows:
                context.set_progress(done, rows, f"{done} of {rows} rows")
            if fail_first_attempt and context.attempt == 1 and done == rows // 2:
                raise ConnectionError("the data warehouse dropped the connection")
    return {"rows": rows, "download": reverse("demo:report-download", args=[context.job_id])}


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

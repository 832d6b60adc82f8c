"""The demo scenarios: sign-up fan-out (background vs. synchronous, a batch of five with a
callback once all are done), checkout, a report built by a batch of chunk jobs with a live
progress bar, rate-limited partner calls, and a job for the dead letter. Plus the
fake services the tasks call (a flaky CRM, a partner API).

Ownership is the visitor's session: the demo has no sign-in, so what a browser created (its
jobs, the users it signed up, its orders) is remembered in its session, and the pages show a
visitor only those (404 for anything else). Forms validate every value (400, never a 500).
"""

import random
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.db.models.functions import TruncSecond
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from asyncjobs import enqueue_many
from asyncjobs.conf import jobs_settings
from asyncjobs.models import Batch, BatchState, Job, JobStatus
from asyncjobs.tokens import batch_status_url, check_batch_token, status_url
from example_project.demo import tasks
from example_project.demo.forms import (
    CheckoutForm,
    HomeActionForm,
    PartnerForm,
    ReportForm,
    SignupForm,
)
from example_project.demo.models import Order, PartnerCall, Product

PRODUCTS = [
    ("MUG-01", "Enamel mug", 1200, 25),
    ("TEE-01", "Queue T-shirt", 2500, 10),
    ("PST-01", "Poster: retries with jitter", 900, 3),
]


# How many jobs, sign-ups and orders a visitor's session remembers (the oldest are forgotten).
WATCHED_JOBS = 100
REMEMBERED = 20


def form_errors(form: forms.Form) -> list[str]:
    """A form's errors as lines for the page: "field: message"."""
    return [
        message if field == "__all__" else f"{field}: {message}"
        for field, messages in form.errors.items()
        for message in messages
    ]


def home(request: HttpRequest) -> HttpResponse:
    """The scenarios, and the latest jobs this visitor started (nobody else's)."""
    errors: list[str] = []
    if request.method == "POST":
        form = HomeActionForm(request.POST)
        if form.is_valid():
            _watch(request, [tasks.always_fails.enqueue("the demo asked for it")])
            return redirect("demo:home")
        errors = form_errors(form)
    jobs = Job.objects.filter(pk__in=_watched_ids(request)).order_by("-enqueued_at")[:25]
    return render(
        request, "demo/home.html", {"jobs": jobs, "errors": errors}, status=400 if errors else 200
    )


def _watch(request: HttpRequest, results: list[Any]) -> None:
    """Remember the jobs this browser started: it may see them and poll their status."""
    watched = request.session.get("watched", [])
    watched = [{"id": str(r.id), "task": r.task.name} for r in results] + watched
    request.session["watched"] = watched[:WATCHED_JOBS]


def _watched_ids(request: HttpRequest) -> list[str]:
    return [w["id"] for w in request.session.get("watched", [])]


def _watched(request: HttpRequest, ids: list[str]) -> list[dict[str, str]]:
    """The jobs of ``ids`` that this browser started, each with a status URL (token)."""
    tasks_by_id = {w["id"]: w["task"] for w in request.session.get("watched", [])}
    return [
        {"id": i, "task": tasks_by_id.get(i, ""), "status_url": status_url(i)}
        for i in ids
        if i in tasks_by_id
    ]


def _remember(request: HttpRequest, kind: str, pk: int, job_ids: list[str]) -> None:
    """Remember that this browser created object ``pk`` of ``kind`` ("signups", "orders"),
    with the ids of its jobs."""
    remembered = {str(pk): job_ids} | request.session.get(kind, {})
    request.session[kind] = dict(list(remembered.items())[:REMEMBERED])


def _remembered(request: HttpRequest, kind: str, pk: int) -> list[str]:
    """The job ids of object ``pk`` of ``kind`` if this browser created it; else 404."""
    job_ids = request.session.get(kind, {}).get(str(pk))
    if job_ids is None:
        raise Http404("Not one of yours.")
    return list(job_ids)


# --- 1. sign-up fan-out ----------------------------------------------------------------------


def signup(request: HttpRequest) -> HttpResponse:
    """Create a user. In the background mode the follow-up work is five jobs enqueued in the
    user's own transaction; in the synchronous mode the request does it all itself."""
    errors: list[str] = []
    if request.method == "POST":
        form = SignupForm(request.POST)
        if not form.is_valid():
            errors = form_errors(form)
        else:
            username, email = form.cleaned_data["username"], form.cleaned_data["email"]
            mode = form.cleaned_data["mode"]
            started = time.perf_counter()
            try:
                if mode == "synchronous":
                    user_id = _signup_synchronously(username, email)
                    ids: list[str] = []
                else:
                    with transaction.atomic():  # the user and its jobs commit together
                        user = get_user_model().objects.create_user(username, email)
                        _, results = tasks.start_signup(user.pk)
                    user_id, ids = user.pk, [str(r.id) for r in results]
                    _watch(request, results)
            except IntegrityError:  # taken between the form's check and the insert
                errors = [f"username: The username {username!r} is taken."]
            except Exception as exc:  # what a synchronous sign-up shows its user
                errors = [f"Sign-up failed while doing the follow-up work inline: {exc}"]
            else:
                elapsed = round((time.perf_counter() - started) * 1000)
                timings = request.session.get("signup_ms", {})
                timings[mode] = elapsed
                request.session["signup_ms"] = timings
                _remember(request, "signups", user_id, ids)
                return redirect("demo:signup-done", user_id=user_id)
    return render(
        request,
        "demo/signup.html",
        {"errors": errors, "timings": request.session.get("signup_ms", {})},
        status=400 if errors else 200,
    )


def _signup_synchronously(username: str, email: str) -> int:
    """The same work inside the request, as an app without background jobs does it: the
    user waits for every step, and a CRM hiccup is retried (or fails) in front of them."""
    with transaction.atomic():
        user = get_user_model().objects.create_user(username, email)
        for step in tasks.SIGNUP_TASKS:
            for attempt in range(3):
                try:
                    step.call(user.pk)
                    break
                except Exception:
                    if attempt == 2:
                        raise
                    time.sleep(1)  # a naive retry, while the user waits
    return int(user.pk)


def signup_done(request: HttpRequest, user_id: int) -> HttpResponse:
    """A user this browser signed up, and its jobs live; 404 for anybody else's."""
    ids = _remembered(request, "signups", user_id)
    user = get_object_or_404(get_user_model(), pk=user_id)
    batch_id = (
        Job.objects.filter(pk__in=ids, batch__isnull=False)
        .values_list("batch_id", flat=True)
        .first()
    )
    return render(
        request,
        "demo/signup_done.html",
        {
            "new_user": user,
            "jobs": _watched(request, ids),
            "timings": request.session.get("signup_ms", {}),
            # The fan-out's batch, polled for "all five done" (its token: this browser only).
            "batch_url": batch_status_url(batch_id) if batch_id else "",
        },
    )


# --- 2. checkout -----------------------------------------------------------------------------


class PaymentDeclined(Exception):
    pass


def authorize_payment(card: str, amount_cents: int) -> str:
    """The one step the customer must wait for: yes or no from the payment provider."""
    time.sleep(0.25)  # the provider's round trip
    digits = "".join(ch for ch in card if ch.isdigit())
    if len(digits) < 12 or digits.endswith("0002"):
        raise PaymentDeclined("The card was declined.")
    return f"auth-{uuid.uuid4().hex[:12]}"


def checkout(request: HttpRequest) -> HttpResponse:
    for sku, name, price, stock in PRODUCTS:
        Product.objects.get_or_create(
            sku=sku, defaults={"name": name, "price_cents": price, "stock": stock}
        )
    errors: list[str] = []
    status = 200
    form = CheckoutForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and not form.is_valid():
        errors, status = form_errors(form), 400
    elif request.method == "POST":
        product = form.cleaned_data["product"]
        quantity = form.cleaned_data["quantity"]
        email = form.cleaned_data["email"]
        total = product.price_cents * quantity
        try:
            authorization = authorize_payment(form.cleaned_data["card"], total)
        except PaymentDeclined as exc:
            errors, status = [str(exc)], 402
        else:
            with transaction.atomic():  # the order and its follow-ups commit together
                order = Order.objects.create(
                    product=product,
                    quantity=quantity,
                    email=email,
                    status=Order.Status.AUTHORIZED,
                    total_cents=total,
                    authorization=authorization,
                )
                results = [
                    tasks.send_receipt.enqueue(order.pk),
                    tasks.reserve_inventory.enqueue(order.pk),
                    tasks.track_event.enqueue(
                        "order_placed", {"order": order.pk, "sku": product.sku, "cents": total}
                    ),
                ]
            _watch(request, results)
            _remember(request, "orders", order.pk, [str(r.id) for r in results])
            return redirect("demo:order-done", order_id=order.pk)
    return render(
        request,
        "demo/checkout.html",
        {"products": Product.objects.order_by("pk"), "errors": errors},
        status=status,
    )


def order_done(request: HttpRequest, order_id: int) -> HttpResponse:
    """An order this browser placed, and its jobs live; 404 for anybody else's."""
    ids = _remembered(request, "orders", order_id)
    order = get_object_or_404(Order.objects.select_related("product"), pk=order_id)
    return render(request, "demo/order_done.html", {"order": order, "jobs": _watched(request, ids)})


# --- 3. report: a batch of chunk jobs with a live progress bar -------------------------------


def _report_ids(request: HttpRequest) -> dict[str, int]:
    """The reports this browser started: batch id -> rows."""
    return dict(request.session.get("reports", {}))


def _report(request: HttpRequest, batch_id: uuid.UUID) -> Batch:
    """A report batch this browser started; 404 for anything else (another visitor's
    report, a batch that is not a report)."""
    if str(batch_id) not in _report_ids(request):
        raise Http404("No such report.")
    return get_object_or_404(Batch, pk=batch_id)


def _is_report(batch_id: uuid.UUID) -> bool:
    return Job.objects.filter(
        batch_id=batch_id, task_path=tasks.build_report_chunk.module_path
    ).exists()


def reports(request: HttpRequest) -> HttpResponse:
    """Start a report (a batch of chunk jobs); list the reports this browser started."""
    errors: list[str] = []
    if request.method == "POST":
        form = ReportForm(request.POST)
        if form.is_valid():
            rows = form.cleaned_data["rows"]
            report = tasks.start_report(rows, fail_first_attempt=form.cleaned_data["flaky"])
            started = {report.id: rows} | _report_ids(request)
            request.session["reports"] = dict(list(started.items())[:REMEMBERED])
            return redirect("demo:report-status", batch_id=report.id)
        errors = form_errors(form)
    recent = Batch.objects.filter(pk__in=list(_report_ids(request))).order_by("-created_at")[:10]
    return render(
        request,
        "demo/reports.html",
        {"recent": recent, "errors": errors},
        status=400 if errors else 200,
    )


def report_status(request: HttpRequest, batch_id: uuid.UUID) -> HttpResponse:
    """A report's progress page, with the batch's status token: for the browser that started
    it only (404 for anybody else, who must not get a token)."""
    report = _report(request, batch_id)
    return render(
        request,
        "demo/report_status.html",
        {
            "report": report,
            "rows": _report_ids(request)[str(batch_id)],
            "status_url": batch_status_url(report.pk),
            "download_url": reverse("demo:report-download", args=[report.pk]),
        },
    )


def report_download(request: HttpRequest, batch_id: uuid.UUID) -> HttpResponse:
    """The finished CSV, for whoever holds the batch's status token (or staff)."""
    allowed = request.user.is_staff or check_batch_token(request.GET.get("token", ""), batch_id)
    report = Batch.objects.filter(pk=batch_id).first()
    if not allowed or report is None or not _is_report(report.pk):
        raise Http404("No such report.")
    if report.state != BatchState.SUCCEEDED:
        raise Http404("The report is not ready.")
    # Usually assembled by the batch's on_success callback already; if the visitor is
    # faster than that job, assembled here (the same idempotent function).
    path = tasks.assemble_report(report.pk)
    return FileResponse(path.open("rb"), as_attachment=True, filename=f"report-{batch_id}.csv")


# --- 4. rate-limited partner calls -----------------------------------------------------------


def partner(request: HttpRequest) -> HttpResponse:
    """Enqueue a burst of partner calls; show the rate the partner sees (counts only)."""
    errors: list[str] = []
    if request.method == "POST":
        form = PartnerForm(request.POST)
        if form.is_valid():
            count = form.cleaned_data["count"]
            enqueue_many([(tasks.call_partner, (i,), {}) for i in range(1, count + 1)])
            return redirect("demo:partner")
        errors = form_errors(form)
    since = timezone.now() - timedelta(seconds=15)
    per_second = list(
        PartnerCall.objects.filter(received_at__gte=since)
        .annotate(second=TruncSecond("received_at"))
        .values("second")
        .annotate(calls=Count("id"))
        .order_by("second")
    )
    waiting = Job.objects.filter(
        queue_name="partner", status__in=[JobStatus.QUEUED, JobStatus.SCHEDULED]
    ).count()
    limit = (jobs_settings.QUEUES.get("partner") or {}).get("RATE_LIMIT", "none")
    window_since = timezone.now() - PARTNER_WINDOW_SPAN
    received = PartnerCall.objects.filter(received_at__gte=window_since).order_by("received_at")
    most = most_in_one_second(list(received.values_list("received_at", flat=True)))
    return render(
        request,
        "demo/partner.html",
        {
            "per_second": per_second,
            "waiting": waiting,
            "limit": limit,
            "most": most,
            "errors": errors,
        },
        status=400 if errors else 200,
    )


# How far back the partner page looks for the most calls in one second.
PARTNER_WINDOW_SPAN = timedelta(minutes=10)


def most_in_one_second(times: list[datetime]) -> int:
    """The most of ``times`` (sorted) in any window of one second, ``[t, t + 1 s)`` for every
    ``t``: what a partner that allows N calls per second counts, not calendar seconds."""
    most = first = 0
    for last, at in enumerate(times):
        while at - times[first] >= timedelta(seconds=1):
            first += 1
        most = max(most, last - first + 1)
    return most


# --- the fake services the tasks call --------------------------------------------------------


@csrf_exempt
def fake_crm(request: HttpRequest) -> JsonResponse:
    """A CRM that fails DEMO_CRM_FAILURE_RATE of the time (a third by default)."""
    time.sleep(random.uniform(0.05, 0.2))
    if random.random() < settings.DEMO_CRM_FAILURE_RATE:
        return JsonResponse({"error": "Service Unavailable"}, status=503)
    return JsonResponse({"crm_id": f"crm-{uuid.uuid4().hex[:8]}"})


def fake_partner(request: HttpRequest, item: int) -> JsonResponse:
    """A partner API; each call is recorded, so the demo can show the rate it sees."""
    PartnerCall.objects.create(item=item)
    return JsonResponse({"item": item, "ok": True})

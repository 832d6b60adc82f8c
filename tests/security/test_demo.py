"""The example project is safe to expose by mistake (issue 24, part 4).

Each probe says what it expects. The settings probes run the example project's own settings
in a subprocess (as ``manage.py`` would); the page probes drive the demo's views, mounted at
``/demo/`` in the test URLconf, with one test client per visitor (its own session).

Ownership is the visitor's session: the demo has no sign-in, so what a browser created is
remembered in its session, and every other visitor gets a 404.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from asyncjobs.models import Job
from asyncjobs.tokens import check_batch_token, check_token, make_batch_token
from example_project.demo import tasks
from example_project.demo.models import Order, Product
from tests.conftest import ROOT

STRONG_KEY = "k3y-" + "x7Qm9Zr2Lp4Vt8Ws1Ny6Bc0Hd5Jf3Gk" * 2  # 68 characters, 20+ distinct


@pytest.fixture
def example_project(tmp_path):
    """``example_project(code, env=..., args=..., stdin=...)`` runs ``code`` (after
    ``django.setup()``), or ``manage.py args``, with the example project's settings, a
    clean environment plus ``env``, and a SQLite file in a temporary directory."""

    def run(code="", *, env=None, args=None, stdin=None):
        clean = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DATABASE_URL", "ASYNCJOBS_", "DJANGO_", "DEMO_"))
        }
        clean |= {
            "DJANGO_SETTINGS_MODULE": "example_project.settings",
            "PYTHONPATH": str(ROOT),
            "ASYNCJOBS_DB_NAME": str(tmp_path / "example.sqlite3"),
            **(env or {}),
        }
        if args is not None:
            command = [sys.executable, "manage.py", *args]
        else:
            setup = "import django\ndjango.setup()\n"
            command = [sys.executable, "-c", setup + textwrap.dedent(code)]
        return subprocess.run(
            command,
            cwd=ROOT,
            env=clean,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


# --- settings: debug, secret key, error pages, clickjacking, the outbound allow-list ----------


def test_debug_is_off_by_default_and_the_default_key_is_refused(example_project):
    started = example_project("print('started')")
    assert started.returncode != 0
    assert "ImproperlyConfigured" in started.stderr
    assert "DJANGO_SECRET_KEY" in started.stderr and "DJANGO_DEBUG=1" in started.stderr
    assert "started" not in started.stdout


@pytest.mark.parametrize(
    "key",
    [
        "example-project-insecure-key",  # the published default
        "short-key",
        "django-insecure-" + "a1b2c3d4e5" * 5,  # startproject's development key
        "a" * 64,  # long but 1 distinct character
    ],
)
def test_a_weak_secret_key_is_refused_with_debug_off(example_project, key):
    started = example_project("print('started')", env={"DJANGO_SECRET_KEY": key})
    assert started.returncode != 0
    assert "weak SECRET_KEY" in started.stderr


def test_a_strong_key_starts_with_debug_off(example_project):
    started = example_project(
        "from django.conf import settings; print(settings.DEBUG)",
        env={"DJANGO_SECRET_KEY": STRONG_KEY},
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "False"


def test_make_demo_turns_debug_on_explicitly(example_project):
    script = (ROOT / "scripts" / "demo.sh").read_text()
    assert re.search(r"^export DJANGO_DEBUG=\"\$\{DJANGO_DEBUG:-1\}\"$", script, re.MULTILINE)
    started = example_project(
        "from django.conf import settings; print(settings.DEBUG)", env={"DJANGO_DEBUG": "1"}
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "True"


def test_deployment_check_finds_no_clickjacking_debug_or_key_problem(example_project):
    check = example_project(args=["check", "--deploy"], env={"DJANGO_SECRET_KEY": STRONG_KEY})
    report = check.stdout + check.stderr
    for warning in ("security.W002", "security.W009", "security.W018", "security.W019"):
        assert warning not in report, report


SERVER_ERROR = """
    import json
    from django.test import Client
    # runserver (wsgiref) hands the process environment to every request: so does this one.
    client = Client(
        raise_request_exception=False,
        HTTP_HOST="127.0.0.1",
        DATABASE_URL=__import__("os").environ["DATABASE_URL"],
    )
    response = client.get("/checkout/")  # the database is unreachable: a 500
    print(json.dumps({"status": response.status_code,
                      "frame": response.get("X-Frame-Options"),
                      "body": response.content.decode()}))
"""


@pytest.mark.parametrize(
    "env",
    [{"DJANGO_DEBUG": "1"}, {"DJANGO_SECRET_KEY": STRONG_KEY}],
    ids=["debug-page", "production-page"],
)
def test_a_server_error_page_never_prints_the_database_url(example_project, env):
    url = "postgres://demo:hunter2-secret@127.0.0.1:9/demo"  # port 9: nothing listens
    run = example_project(SERVER_ERROR, env={**env, "DATABASE_URL": url})
    assert run.returncode == 0, run.stderr
    page = json.loads(run.stdout)
    assert page["status"] == 500
    assert "hunter2" not in page["body"]
    assert url not in page["body"]
    assert page["frame"] == "DENY"
    if "DJANGO_DEBUG" in env:  # the debug page, with the variable named but hidden
        assert "DATABASE_URL" in page["body"] and "********" in page["body"]


ALLOW_LIST = """
    import json
    from asyncjobs.outbound import validate_url
    verdicts = {}
    for url in json.loads(input()):
        try:
            validate_url(url)
            verdicts[url] = "allowed"
        except ValueError:  # OutboundURLRefusedError
            verdicts[url] = "refused"
    print(json.dumps(verdicts))
"""


def test_the_outbound_allow_list_names_the_demos_own_fake_services_only(example_project):
    own = "http://127.0.0.1:8123"
    expected = {
        f"{own}/fake/crm/": "allowed",
        f"{own}/fake/partner/3/?attempt=2": "allowed",
        f"{own}/admin/": "refused",  # the admin, on the demo's own port
        f"{own}/jobs/": "refused",
        f"{own}/fake/../admin/": "refused",
        f"{own}/fake/%2e%2e/admin/": "refused",
        "http://127.0.0.1:5432/": "refused",  # PostgreSQL's port
        "http://127.0.0.1:8124/fake/crm/": "refused",  # another port
        "http://127.0.0.2:8123/fake/crm/": "refused",
        "http://localhost:22/": "refused",
        "http://[::1]:8123/fake/crm/": "refused",
    }
    run = example_project(
        ALLOW_LIST,
        env={"DJANGO_DEBUG": "1", "DEMO_BASE_URL": own},
        stdin=json.dumps(list(expected)),
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == expected


# --- pages: each visitor sees only its own objects ---------------------------------------------


@pytest.fixture
def visitors(settings, tmp_path):
    """Two browsers: ``alice`` and ``bob``, each with its own session."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return Client(), Client()


def signup(client, name):
    response = client.post(reverse("demo:signup"), {"username": name, "email": f"{name}@ex.com"})
    assert response.status_code == 302, response.content
    return User.objects.get(username=name)


@pytest.mark.django_db
def test_home_lists_only_the_visitors_own_jobs(visitors):
    alice, bob = visitors
    signup(alice, "alice")
    assert bob.post(reverse("demo:home"), {"action": "fail"}).status_code == 302
    alices = {str(j.pk) for j in Job.objects.exclude(task_path=tasks.always_fails.module_path)}
    (bobs,) = {str(j.pk) for j in Job.objects.filter(task_path=tasks.always_fails.module_path)}
    assert len(alices) == 5

    alice_page = alice.get(reverse("demo:home"))
    assert {str(j.pk) for j in alice_page.context["jobs"]} == alices
    assert bobs not in alice_page.content.decode()
    bob_page = bob.get(reverse("demo:home"))
    assert [str(j.pk) for j in bob_page.context["jobs"]] == [bobs]
    assert not any(job_id in bob_page.content.decode() for job_id in alices)
    stranger = Client().get(reverse("demo:home"))
    assert list(stranger.context["jobs"]) == []
    assert b"No jobs from this browser yet" in stranger.content


@pytest.mark.django_db
def test_a_report_page_hands_its_token_to_the_reports_owner_only(visitors):
    alice, bob = visitors
    started = alice.post(reverse("demo:reports"), {"rows": 20})
    assert started.status_code == 302
    page = alice.get(started["Location"])
    assert page.status_code == 200 and "token=" in page.context["status_url"]

    other = bob.get(started["Location"])
    assert other.status_code == 404
    assert b"token=" not in other.content
    assert list(bob.get(reverse("demo:reports")).context["recent"]) == []
    assert len(alice.get(reverse("demo:reports")).context["recent"]) == 1
    # A job that is not a report is no report, even for the visitor that started it.
    alice.post(reverse("demo:home"), {"action": "fail"})
    failing = Job.objects.get(task_path=tasks.always_fails.module_path)
    assert alice.get(reverse("demo:report-status", args=[failing.pk])).status_code == 404
    # Nor is another batch, even one of hers, and its token downloads nothing.
    user = signup(alice, "alice")
    fan_out = Job.objects.filter(args=[user.pk], batch__isnull=False).first().batch_id
    assert alice.get(reverse("demo:report-status", args=[fan_out])).status_code == 404
    download = reverse("demo:report-download", args=[fan_out])
    assert alice.get(download, {"token": make_batch_token(fan_out)}).status_code == 404
    # A report's page hands out the batch's token, never a job's.
    report_id = started["Location"].rstrip("/").rsplit("/", 1)[1]
    token = page.context["status_url"].split("token=")[1]
    assert check_batch_token(token, report_id) and not check_token(token, report_id)


@pytest.mark.django_db
def test_a_signup_page_shows_the_visitors_own_user_only(visitors):
    alice, bob = visitors
    user = signup(alice, "alice")
    url = reverse("demo:signup-done", args=[user.pk])
    mine = alice.get(url)
    assert mine.status_code == 200 and len(mine.context["jobs"]) == 5

    theirs = bob.get(url)
    assert theirs.status_code == 404
    assert b"alice" not in theirs.content
    admin = User.objects.create_superuser("root", "root@ex.com", "pw")
    assert alice.get(reverse("demo:signup-done", args=[admin.pk])).status_code == 404


@pytest.mark.django_db
def test_an_order_page_shows_the_visitors_own_order_only(visitors):
    alice, bob = visitors
    alice.get(reverse("demo:checkout"))
    mug = Product.objects.get(sku="MUG-01")
    bought = alice.post(
        reverse("demo:checkout"),
        {"product": mug.pk, "quantity": 1, "email": "alice@ex.com", "card": "4" * 16},
    )
    assert bought.status_code == 302
    order = Order.objects.get()
    url = reverse("demo:order-done", args=[order.pk])
    assert alice.get(url).status_code == 200

    theirs = bob.get(url)
    assert theirs.status_code == 404
    assert order.authorization.encode() not in theirs.content


# --- forms: bad input is a form error (400), never a 500 ---------------------------------------


BAD_INPUT = [
    ("checkout", {"product": "abc", "quantity": 1, "card": "4" * 16}, "product"),
    ("checkout", {"product": "999999", "quantity": 1, "card": "4" * 16}, "product"),
    ("checkout", {"product": "MUG", "quantity": "two", "card": "4" * 16}, "quantity"),
    ("checkout", {"product": "MUG", "quantity": "0", "card": "4" * 16}, "quantity"),
    ("checkout", {"product": "MUG", "quantity": "11", "card": "4" * 16}, "quantity"),
    ("checkout", {"product": "MUG", "quantity": "1", "email": "nope", "card": "4"}, "email"),
    ("reports", {"rows": "lots"}, "rows"),
    ("reports", {"rows": "1e9"}, "rows"),
    ("reports", {"rows": "99999999999999999999999"}, "rows"),
    ("reports", {}, "rows"),
    ("partner", {"count": "many"}, "count"),
    ("partner", {"count": "-1"}, "count"),
    ("partner", {"count": "501"}, "count"),
    ("signup", {"username": "", "email": "a@ex.com"}, "username"),
    ("signup", {"username": "<script>", "email": "a@ex.com"}, "username"),
    ("signup", {"username": "x" * 151, "email": "a@ex.com"}, "username"),
    ("signup", {"username": "eve", "email": "not-an-email"}, "email"),
    ("signup", {"username": "eve", "email": "e@ex.com", "mode": "sideways"}, "mode"),
    ("home", {"action": "explode"}, "action"),
    ("home", {}, "action"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("page", "data", "field"), BAD_INPUT)
def test_bad_input_is_a_form_error_never_a_500(page, data, field, client):
    client.get(reverse("demo:checkout"))  # the shop's products exist
    if data.get("product") == "MUG":
        data = {**data, "product": Product.objects.get(sku="MUG-01").pk}
    response = client.post(reverse(f"demo:{page}"), data)
    assert response.status_code == 400
    errors = response.context["errors"]
    assert any(error.startswith(f"{field}: ") for error in errors), errors
    assert b'id="errors"' in response.content
    assert not Job.objects.exists()
    assert not Order.objects.exists()

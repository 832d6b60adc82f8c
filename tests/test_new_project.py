"""README's quick start, in a project made by ``django-admin startproject``: a Django
developer's first hour with asyncjobs, on whichever Django, tasks framework (``django.tasks``
or the ``django_tasks`` backport), driver and database this suite runs on.

The project gets a database of its own (PostgreSQL or MariaDB when ``DATABASE_URL`` is set,
else an SQLite file), enqueues in a transaction, runs ``runworker --burst``, is polled over HTTP at
``/jobs/<id>/`` through ``runserver``, and retries a failed job from the admin.
"""

import base64
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from asyncjobs.tasks_api import FORWARDS_TASK_OPTIONS, SOURCE

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

ADMIN_PASSWORD = "quick-start-only"


def _run(args, cwd, env, timeout=120):
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _postgres_admin(url, statement):
    """Run ``statement`` in autocommit on the server of ``url`` (its ``postgres`` database)
    with whichever driver this environment has."""
    server = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    try:
        import psycopg
    except ImportError:
        import psycopg2

        conn = psycopg2.connect(server)
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(statement)
        conn.close()
        return
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture
def project_database(tmp_path):
    """The new project's ``DATABASES`` setting, as Python source; the database is dropped
    afterwards."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        path = tmp_path / "db.sqlite3"
        yield (
            '{"default": {"ENGINE": "django.db.backends.sqlite3", '
            f'"NAME": {str(path)!r}, '
            '"OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20}}}'
        )
        return
    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/') or 'asyncjobs'}_quickstart"
    if parts.scheme in ("mysql", "mariadb"):
        yield from _mysql_database(parts, name)
        return
    _postgres_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _postgres_admin(url, f'CREATE DATABASE "{name}"')
    yield (
        '{"default": {"ENGINE": "django.db.backends.postgresql", '
        f'"NAME": {name!r}, "USER": {parts.username or ""!r}, '
        f'"PASSWORD": {parts.password or ""!r}, "HOST": {parts.hostname or ""!r}, '
        f'"PORT": {str(parts.port or "")!r}}}}}'
    )
    _postgres_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _mysql_database(parts, name):
    """The project's database on the MariaDB/MySQL server of ``parts`` (dropped after)."""
    import MySQLdb

    def admin(statement):
        conn = MySQLdb.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
        )
        try:
            conn.cursor().execute(statement)
        finally:
            conn.close()

    admin(f"DROP DATABASE IF EXISTS `{name}`")
    admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    yield (
        '{"default": {"ENGINE": "django.db.backends.mysql", '
        f'"NAME": {name!r}, "USER": {parts.username or "root"!r}, '
        f'"PASSWORD": {parts.password or ""!r}, "HOST": {parts.hostname or "127.0.0.1"!r}, '
        f'"PORT": {str(parts.port or 3306)!r}, '
        '"OPTIONS": {"charset": "utf8mb4", "isolation_level": "read committed"}}}'
    )
    admin(f"DROP DATABASE IF EXISTS `{name}`")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url, auth, timeout=5):
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def test_readme_quick_start_in_a_new_project(tmp_path, project_database):
    bin_dir = Path(sys.executable).parent
    django_admin = bin_dir / "django-admin"
    startproject = (
        [str(django_admin)] if django_admin.exists() else [sys.executable, "-m", "django"]
    )
    root = tmp_path / "site"
    root.mkdir()
    # The project's own environment: no test settings, nothing added to the path.
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
    env["PYTHONUNBUFFERED"] = "1"
    _run([*startproject, "startproject", "mysite", str(root)], cwd=tmp_path, env=env)
    manage = [sys.executable, "manage.py"]
    _run([*manage, "startapp", "shop"], cwd=root, env=env)

    # README's quick start: settings, the job API's URLs, a task module.
    with (root / "mysite" / "settings.py").open("a") as settings:
        settings.write(
            textwrap.dedent(
                f"""
                INSTALLED_APPS += ["rest_framework", "asyncjobs", "shop"]
                MIDDLEWARE += ["asyncjobs.middleware.EnqueuedByMiddleware"]
                TASKS = {{
                    "default": {{
                        "BACKEND": "asyncjobs.backend.JobsBackend",
                        "QUEUES": ["default", "emails"],
                    }}
                }}
                ASYNCJOBS = {{"MAX_ATTEMPTS": 3}}
                DATABASES = {project_database}
                """
            )
        )
        if "django.db.backends.mysql" in project_database:
            # As docs/deployment.md advises, once read: Django's notes that MariaDB ignores
            # partial indexes (migration 0008 installs what asyncjobs needs instead).
            settings.write('SILENCED_SYSTEM_CHECKS = ["models.W036", "models.W037"]\n')
    urls = root / "mysite" / "urls.py"
    text = urls.read_text().replace(
        "from django.urls import path", "from django.urls import include, path"
    )
    text = text.replace(
        "path('admin/', admin.site.urls),",
        "path('admin/', admin.site.urls),\n    path('jobs/', include('asyncjobs.urls')),",
    ).replace(
        'path("admin/", admin.site.urls),',
        'path("admin/", admin.site.urls),\n    path("jobs/", include("asyncjobs.urls")),',
    )
    assert "asyncjobs.urls" in text
    urls.write_text(text)
    marker = tmp_path / "crm-is-up"
    # README: Django's own @task, except on Django 6.0, whose @task takes no backend options.
    source = SOURCE if FORWARDS_TASK_OPTIONS else "asyncjobs.tasks_api"
    (root / "shop" / "tasks.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path

            from {source} import task


            @task(queue_name="emails", priority=10, max_attempts=5, timeout=30)
            def send_welcome_email(user_id):
                return {{"sent_to": user_id}}


            @task(max_attempts=1)
            def sync_crm(user_id):
                if not Path({str(marker)!r}).exists():
                    raise ConnectionError("the CRM is down")
                return "synced"
            """
        )
    )

    _run([*manage, "migrate", "--no-input"], cwd=root, env=env)
    _run([*manage, "check", "--fail-level", "WARNING"], cwd=root, env=env)
    enqueue = textwrap.dedent(
        f"""
        import json
        from django.contrib.auth.models import User
        from django.db import transaction
        from shop.tasks import send_welcome_email, sync_crm

        User.objects.create_superuser("admin", "admin@example.com", {ADMIN_PASSWORD!r})
        try:
            with transaction.atomic():
                send_welcome_email.enqueue(0)
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        with transaction.atomic():
            user = User.objects.create(username="ada")
            welcome = send_welcome_email.enqueue(user.id)
            crm = sync_crm.enqueue(user.id)
        print(json.dumps({{"welcome": welcome.id, "crm": crm.id, "user": user.id,
                          "status": welcome.status}}))
        """
    )
    ids = json.loads(_run([*manage, "shell", "-c", enqueue], cwd=root, env=env).splitlines()[-1])
    assert ids["status"] == "READY"
    _run([*manage, "runworker", "--burst"], cwd=root, env=env)

    port = _free_port()
    server = subprocess.Popen(
        [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    auth = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                welcome = _get_json(f"{base}/jobs/{ids['welcome']}/", auth)
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, "runserver exited"
                assert time.monotonic() < deadline, "runserver did not answer within 30 s"
                time.sleep(0.2)
        assert welcome["status"] == "succeeded"
        assert welcome["result"] == {"sent_to": ids["user"]}
        crm = _get_json(f"{base}/jobs/{ids['crm']}/", auth)
        assert crm["status"] == "failed"
        assert crm["last_error"]["error_class"] == "builtins.ConnectionError"

        # The CRM is back: the operator retries the job from the admin.
        marker.touch()
        retry = textwrap.dedent(
            f"""
            from django.contrib.auth.models import User
            from django.test import Client

            client = Client(HTTP_HOST="127.0.0.1")
            client.force_login(User.objects.get(username="admin"))
            response = client.post(
                "/admin/asyncjobs/job/",
                {{"action": "retry_selected", "_selected_action": [{ids["crm"]!r}]}},
            )
            assert response.status_code == 302, response.status_code
            print("retried")
            """
        )
        assert "retried" in _run([*manage, "shell", "-c", retry], cwd=root, env=env)
        assert _get_json(f"{base}/jobs/{ids['crm']}/", auth)["status"] == "queued"
        _run([*manage, "runworker", "--burst"], cwd=root, env=env)
        crm = _get_json(f"{base}/jobs/{ids['crm']}/", auth)
        assert (crm["status"], crm["result"], crm["attempts"]) == ("succeeded", "synced", 2)
        # Nothing of the rolled-back transaction was stored.
        listed = _get_json(f"{base}/jobs/", auth)["results"]
        assert sorted(job["id"] for job in listed) == sorted([ids["welcome"], ids["crm"]])
    finally:
        server.terminate()
        server.wait(timeout=10)

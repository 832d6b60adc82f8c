#!/usr/bin/env bash
# The release check: build the sdist and wheel, `twine check` them, check what the wheel holds,
# then install the wheel into a clean virtualenv (no source tree on the path) and, in a project
# of its own against PostgreSQL, run migrate, enqueue a job and drain it with runworker --burst.
#   scripts/wheel_check.sh
# PostgreSQL comes from DATABASE_URL (default postgres://postgres@127.0.0.1:5432/asyncjobs); the
# check uses a database of its own beside it (<name>_wheel), dropped at the end.
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
ensure_venv
cd "$ROOT"
PG_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/asyncjobs}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK" "$ROOT/build"' EXIT

echo "==> python -m build" >&2
"$VENV/bin/python" -m build --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 || {
    cat "$WORK/build.log" >&2
    exit 1
}
echo "==> twine check" >&2
"$VENV/bin/twine" check --strict "$WORK"/dist/*

echo "==> what the wheel holds" >&2
"$VENV/bin/python" - "$WORK"/dist/*.whl <<'EOF'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
must = [
    "asyncjobs/py.typed",
    "asyncjobs/migrations/0001_initial.py",
    "asyncjobs/templates/admin/asyncjobs/dashboard.html",
    "asyncjobs/tasks_api.py",
    "asyncjobs/db/sql/postgresql.sql",
    "asyncjobs/db/sql/sqlite.sql",
    "asyncjobs/db/sql/mysql.sql",
    "asyncjobs/db/sql/common.sql",
]
missing = [name for name in must if name not in names]
stray = [n for n in names if n.split("/")[0] in {"tests", "bench", "chaos", "example_project"}]
if missing or stray:
    sys.exit(f"wheel: missing {missing}, should not hold {stray}")
print(f"{len(names)} files; templates, SQL, migrations and py.typed present; no tests or bench")
EOF

echo "==> a clean virtualenv with the wheel" >&2
PY="$(find_python)"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet "$(ls "$WORK"/dist/*.whl)[postgres]" 2>&1 \
    | grep -v "is ignored" >&2 || true
"$WORK/venv/bin/python" -c "import asyncjobs" || { echo "the wheel did not install" >&2; exit 1; }

# A project of its own, outside the source tree.
mkdir -p "$WORK/project/shop"
DB_NAME="$(basename "${PG_URL%%\?*}")_wheel"
cat >"$WORK/project/settings.py" <<EOF
from urllib.parse import urlsplit

_url = urlsplit("$PG_URL")
SECRET_KEY = "wheel-check-only"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth", "django.contrib.contenttypes", "rest_framework", "asyncjobs", "shop",
]
DATABASES = {"default": {
    "ENGINE": "django.db.backends.postgresql", "NAME": "$DB_NAME",
    "USER": _url.username or "", "PASSWORD": _url.password or "",
    "HOST": _url.hostname or "", "PORT": str(_url.port or ""),
}}
TASKS = {"default": {"BACKEND": "asyncjobs.backend.JobsBackend"}}
EOF
touch "$WORK/project/shop/__init__.py"
cat >"$WORK/project/shop/tasks.py" <<'EOF'
from asyncjobs.tasks_api import task


@task()
def add(a, b):
    return a + b
EOF
cd "$WORK/project"
export DJANGO_SETTINGS_MODULE=settings PYTHONPATH="$WORK/project"
admin_sql() {
    "$WORK/venv/bin/python" - "$PG_URL" "$1" <<'EOF'
import sys
from urllib.parse import urlsplit, urlunsplit

import psycopg

url = urlunsplit(urlsplit(sys.argv[1])._replace(path="/postgres"))
with psycopg.connect(url, autocommit=True) as conn:
    conn.execute(sys.argv[2])
EOF
}
admin_sql "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)"
admin_sql "CREATE DATABASE \"$DB_NAME\""
trap 'admin_sql "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" || true; rm -rf "$WORK" "$ROOT/build"' EXIT
DJANGO_ADMIN="$WORK/venv/bin/django-admin"

echo "==> migrate, enqueue, runworker --burst (installed from the wheel)" >&2
"$DJANGO_ADMIN" migrate --no-input >/dev/null
JOB_ID="$("$DJANGO_ADMIN" shell -c '
import asyncjobs
from django.db import transaction
from shop.tasks import add

assert "site-packages" in asyncjobs.__file__, asyncjobs.__file__
with transaction.atomic():
    print(add.enqueue(2, 3).id)
' | tail -n1)"
"$DJANGO_ADMIN" runworker --burst
"$DJANGO_ADMIN" shell -c "
from shop.tasks import add

result = add.get_result('$JOB_ID')
assert (result.status, result.return_value) == ('SUCCESSFUL', 5), (result.status, result.errors)
print('job', result.id, result.status, result.return_value)
"
echo "==> the wheel works: installed, migrated, a job enqueued and drained" >&2

#!/usr/bin/env bash
# Lint, format check, types, import layers, and migrations in sync with the models.
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
ensure_venv
cd "$ROOT"
echo "==> ruff check" >&2
"$VENV/bin/ruff" check .
echo "==> ruff format --check" >&2
"$VENV/bin/ruff" format --check .
echo "==> tasks framework imported only through asyncjobs/tasks_api.py" >&2
# (ruff's TID251 says so too, but asyncjobs/api/ is exempt from it for rest_framework.)
if grep -rnE "^\s*(from|import)\s+(django\.tasks|django_tasks)\b" --include=*.py asyncjobs \
    | grep -v "^asyncjobs/tasks_api.py:"; then
    echo "import these from asyncjobs.tasks_api instead" >&2
    exit 1
fi
echo "==> the database vendor looked at only in asyncjobs/db/" >&2
if grep -rnE "\.vendor\b" --include=*.py asyncjobs | grep -v "^asyncjobs/db/"; then
    echo "make it a strategy method or a function of asyncjobs.db (migrations: db/online.py)" >&2
    exit 1
fi
echo "==> mypy" >&2
"$VENV/bin/mypy"
echo "==> import-linter" >&2
"$VENV/bin/lint-imports"
echo "==> makemigrations --check" >&2
DJANGO_SETTINGS_MODULE=tests.settings DATABASE_URL= "$VENV/bin/python" -m django makemigrations --check --dry-run

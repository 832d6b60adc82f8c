#!/usr/bin/env bash
# Lint, format check, types, import layers, and migrations in sync with the models.
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
ensure_venv
cd "$ROOT"
echo "==> ruff check" >&2
"$VENV/bin/ruff" check .
echo "==> ruff format --check" >&2
"$VENV/bin/ruff" format --check .
echo "==> mypy" >&2
"$VENV/bin/mypy"
echo "==> import-linter" >&2
"$VENV/bin/lint-imports"
echo "==> makemigrations --check" >&2
DJANGO_SETTINGS_MODULE=tests.settings DATABASE_URL= "$VENV/bin/python" -m django makemigrations --check --dry-run

#!/usr/bin/env bash
# The fast tests: SQLite only, nothing that starts a process or a browser, no slow runs
# (markers subprocess, browser, slow; see pyproject.toml). Under a minute on a 2-core machine;
# run the whole suite (scripts/test.sh) before a pull request.
#   scripts/test_fast.sh [pytest args...]
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
ensure_venv
cd "$ROOT"
# The browser tests and the API fuzz run are left out whole, not only deselected: importing
# Playwright and schemathesis and building the schema would take a good part of the minute.
DATABASE_URL= exec "$VENV/bin/python" -m pytest -q -m "not slow and not subprocess and not browser" \
    --ignore=tests/browser --ignore=tests/api/test_fuzz.py "$@"

#!/usr/bin/env bash
# The fast tests: SQLite only, nothing that starts a process or a browser, no slow runs
# (markers subprocess, browser, slow; see pyproject.toml), in two processes. Under a minute on
# an idle 2-core machine;
# run the whole suite (scripts/test.sh) before a pull request.
#   scripts/test_fast.sh [pytest args...]
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
ensure_venv
cd "$ROOT"
# The browser tests and the API fuzz run are left out whole, not only deselected: importing
# Playwright and schemathesis and building the schema would take a good part of the minute.
# Two pytest-xdist workers, each with its own SQLite test database (pytest-django names them
# apart): much of the in-process suite waits (timeouts, backoffs, a local HTTP server), and
# the two overlap. ASYNCJOBS_TEST_WORKERS=0 runs in one process.
DATABASE_URL= exec "$VENV/bin/python" -m pytest -q -m "not slow and not subprocess and not browser" \
    -n "${ASYNCJOBS_TEST_WORKERS:-2}" \
    --ignore=tests/browser --ignore=tests/api/test_fuzz.py "$@"

#!/usr/bin/env bash
# Run the whole test suite on SQLite, then on PostgreSQL.
#   scripts/test.sh [pytest args...]
# PostgreSQL comes from DATABASE_URL (default postgres://postgres@127.0.0.1:5432/asyncjobs).
# If PostgreSQL is not reachable the script tries to start the local cluster; under CI=true an
# unreachable PostgreSQL is a failure, elsewhere it is reported and skipped.
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
ensure_venv
cd "$ROOT"
PY="$VENV/bin/python"
PG_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/asyncjobs}"

run_pytest() {
    local label="$1"; shift
    echo "==> pytest on $label" >&2
    set +e
    "$PY" -m pytest "$@"
    local rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then
        echo "==> pytest on $label collected no tests (exit 5)" >&2
        return 1
    fi
    return "$rc"
}

pg_up() { "$PY" scripts/pg_ready.py "$PG_URL" >/dev/null 2>&1; }

DATABASE_URL= run_pytest "SQLite" "$@"

if ! pg_up; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        echo "==> starting the local PostgreSQL cluster" >&2
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
        for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    fi
fi
if ! pg_up; then
    if [ "${CI:-}" = "true" ]; then
        echo "==> PostgreSQL at $PG_URL is unavailable: failing under CI" >&2
        exit 1
    fi
    echo "==> PostgreSQL at $PG_URL is unavailable: PostgreSQL run SKIPPED (set DATABASE_URL)" >&2
    exit 0
fi
DATABASE_URL="$PG_URL" run_pytest "PostgreSQL" "$@"

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

# PostgreSQL through PgBouncer in transaction pooling mode, with a pool (3 server
# connections) smaller than the workers' connections: the worker, flow-control, scheduler,
# rescue and pooler tests. Skipped (failed under CI) where PgBouncer cannot be installed.
if [ -z "${ASYNCJOBS_SKIP_POOLER:-}" ]; then
    POOL_DIR="$(mktemp -d)"
    POOL_PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    if bash scripts/pgbouncer.sh start "$POOL_DIR" "$POOL_PORT" 3 >/dev/null; then
        trap 'bash scripts/pgbouncer.sh stop "$POOL_DIR"' EXIT
        POOL_URL="$("$PY" scripts/pg_url.py pooled "$PG_URL" "$POOL_PORT")"
        # The test database is dropped directly afterwards: PgBouncer keeps server
        # connections to it open, which DROP DATABASE would wait for.
        set +e
        ASYNCJOBS_TEST_POOLER=transaction ASYNCJOBS_TEST_DIRECT_PORT="$("$PY" scripts/pg_url.py port "$PG_URL")" \
            DATABASE_URL="$POOL_URL" run_pytest "PostgreSQL through PgBouncer (transaction mode)" \
            --reuse-db --create-db tests/test_pooler.py tests/test_db.py tests/worker/test_e2e.py tests/worker/test_scheduler.py tests/test_limits.py tests/test_flow.py "$@"
        rc=$?
        set -e
        bash scripts/pgbouncer.sh stop "$POOL_DIR"
        "$PY" scripts/pg_ready.py "$PG_URL" --drop "test_$("$PY" scripts/pg_url.py name "$POOL_URL")" || true
        exit "$rc"
    elif [ "${CI:-}" = "true" ]; then
        echo "==> PgBouncer could not be started: failing under CI" >&2
        exit 1
    else
        echo "==> PgBouncer could not be started: the pooled run is SKIPPED" >&2
    fi
fi

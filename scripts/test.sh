#!/usr/bin/env bash
# Run the whole test suite on SQLite, PostgreSQL (directly and through PgBouncer) and MariaDB,
# the four runs side by side (each its own database and ASYNCJOBS_TEST_DIR; much of the
# suite waits on worker processes and servers, so they overlap well even on 2 cores), each
# run's output shown when it ends. ASYNCJOBS_TEST_PARALLEL=0 runs them one after the other.
#   scripts/test.sh [pytest args...]
# PostgreSQL comes from DATABASE_URL (default postgres://postgres@127.0.0.1:5432/asyncjobs),
# MariaDB (or MySQL) from MYSQL_DATABASE_URL (default mysql://root@127.0.0.1:3306/asyncjobs; the
# tests use the database "<name>_test" on that server). A server that is not reachable is
# started if it is installed locally; under CI=true one that still cannot be reached is a
# failure, elsewhere it is reported and its run skipped.
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
ensure_venv
cd "$ROOT"
PY="$VENV/bin/python"
PG_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/asyncjobs}"
case "$PG_URL" in
    mysql://*|mariadb://*)  # DATABASE_URL names MariaDB: that run only, after SQLite
        MYSQL_URL="$PG_URL"; PG_URL="" ;;
    *) MYSQL_URL="${MYSQL_DATABASE_URL:-mysql://root@127.0.0.1:3306/asyncjobs}" ;;
esac

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

# unavailable LABEL URL: fail under CI, else say the run is skipped.
unavailable() {
    if [ "${CI:-}" = "true" ]; then
        echo "==> $1 at $2 is unavailable: failing under CI" >&2
        exit 1
    fi
    echo "==> $1 at $2 is unavailable: $1 run SKIPPED" >&2
}

# Runs are started with start_run LABEL FUNCTION ARGS... and collected by finish_runs.
# Side by side, each writes to its own log, printed whole when the run ends.
PARALLEL="${ASYNCJOBS_TEST_PARALLEL:-1}"
TEST_DIR_BASE="${ASYNCJOBS_TEST_DIR:-$ROOT/.test-data}"
LOGS="$(mktemp -d)"
RUN_LABELS=()
RUN_PIDS=()
FAILED=()
start_run() {
    local label="$1"; shift
    local dir
    dir="$TEST_DIR_BASE/$(echo "$label" | tr -c 'A-Za-z0-9\n' '-' | tr 'A-Z' 'a-z')"
    mkdir -p "$dir"
    if [ "$PARALLEL" = "0" ]; then
        ASYNCJOBS_TEST_DIR="$dir" "$@" || FAILED+=("$label")
        return 0
    fi
    echo "==> started: $label (log $LOGS/$label.log)" >&2
    ( export ASYNCJOBS_TEST_DIR="$dir"; start=$SECONDS; rc=0; "$@" || rc=$?
      echo "==> $label: exit $rc after $((SECONDS - start)) s" >&2; exit "$rc" ) \
        >"$LOGS/$label.log" 2>&1 &
    RUN_LABELS+=("$label")
    RUN_PIDS+=("$!")
}
finish_runs() {
    local i
    for i in "${!RUN_PIDS[@]}"; do
        if ! wait "${RUN_PIDS[$i]}"; then FAILED+=("${RUN_LABELS[$i]}"); fi
        echo "======== ${RUN_LABELS[$i]} ========" >&2
        cat "$LOGS/${RUN_LABELS[$i]}.log" >&2
    done
    rm -rf "$LOGS"
    if [ "${#FAILED[@]}" -gt 0 ]; then
        echo "==> failed: ${FAILED[*]}" >&2
        exit 1
    fi
}
trap 'for pid in "${RUN_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done' INT TERM

pg_up() { "$PY" scripts/pg_ready.py "$PG_URL" >/dev/null 2>&1; }
mysql_up() { "$PY" scripts/mysql_ready.py "$MYSQL_URL" >/dev/null 2>&1; }

# PostgreSQL through PgBouncer in transaction pooling mode, with a pool (3 server
# connections) smaller than the workers' connections: the worker, flow-control, scheduler,
# rescue and pooler tests. Skipped (failed under CI) where PgBouncer cannot be installed;
# ASYNCJOBS_SKIP_POOLER=1 skips it.
run_pooled() {
    [ -z "${ASYNCJOBS_SKIP_POOLER:-}" ] || return 0
    local dir port url rc
    dir="$(mktemp -d)"
    port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    if ! bash scripts/pgbouncer.sh start "$dir" "$port" 3 >/dev/null; then
        unavailable PgBouncer "127.0.0.1:$port"
        return 0
    fi
    url="$("$PY" scripts/pg_url.py pooled "$PG_URL" "$port")"
    echo "==> PgBouncer (transaction mode, 3 server connections) on port $port" >&2
    # The test database is dropped directly afterwards: PgBouncer keeps server connections
    # to it open, which DROP DATABASE would wait for.
    rc=0
    ASYNCJOBS_TEST_POOLER=transaction ASYNCJOBS_TEST_DIRECT_PORT="$("$PY" scripts/pg_url.py port "$PG_URL")" \
        DATABASE_URL="$url" run_pytest "PostgreSQL through PgBouncer (transaction mode)" \
        --reuse-db --create-db tests/test_pooler.py tests/test_db.py tests/worker/test_e2e.py \
        tests/worker/test_scheduler.py tests/test_limits.py tests/test_flow.py "$@" || rc=$?
    bash scripts/pgbouncer.sh stop "$dir"
    "$PY" scripts/pg_ready.py "$PG_URL" --drop "test_$("$PY" scripts/pg_url.py name "$url")" || true
    return "$rc"
}

sqlite_run() { DATABASE_URL= run_pytest "SQLite" "$@"; }
postgresql_run() { DATABASE_URL="$PG_URL" run_pytest "PostgreSQL" "$@"; }
mariadb_run() { DATABASE_URL="$MYSQL_URL" run_pytest "MariaDB" "$@"; }

# Which servers answer, before any run starts (a local one that is down is started).
PG_OK=""
if [ -n "$PG_URL" ]; then
    if ! pg_up; then
        if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
            echo "==> starting the local PostgreSQL cluster" >&2
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
            for _ in $(seq 1 30); do pg_up && break; sleep 1; done
        fi
    fi
    if pg_up; then PG_OK=1; else unavailable PostgreSQL "$PG_URL"; fi
fi
if ! mysql_up; then
    # Only a local server that is not running at all is started (a running one that does not
    # answer at MYSQL_DATABASE_URL is a configuration problem, not a stopped server).
    if [ -x /etc/init.d/mariadb ] && ! pgrep -x 'mariadbd|mysqld' >/dev/null 2>&1; then
        echo "==> starting the local MariaDB server" >&2
        /etc/init.d/mariadb start >&2 || true
        for _ in $(seq 1 30); do mysql_up && break; sleep 1; done
    fi
fi
MYSQL_OK=""
if mysql_up; then MYSQL_OK=1; else unavailable MariaDB "$MYSQL_URL"; fi

start_run SQLite sqlite_run "$@"
if [ -n "$PG_OK" ]; then
    start_run PostgreSQL postgresql_run "$@"
    start_run PgBouncer run_pooled "$@"
fi
if [ -n "$MYSQL_OK" ]; then
    start_run MariaDB mariadb_run "$@"
fi
finish_runs

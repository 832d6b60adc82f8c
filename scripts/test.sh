#!/usr/bin/env bash
# Run the whole test suite on SQLite, then on PostgreSQL, then on MariaDB.
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

DATABASE_URL= run_pytest "SQLite" "$@"

if [ -n "$PG_URL" ]; then
    if ! pg_up; then
        if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
            echo "==> starting the local PostgreSQL cluster" >&2
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
            for _ in $(seq 1 30); do pg_up && break; sleep 1; done
        fi
    fi
    if pg_up; then
        DATABASE_URL="$PG_URL" run_pytest "PostgreSQL" "$@"
        run_pooled "$@"
    else
        unavailable PostgreSQL "$PG_URL"
    fi
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
if mysql_up; then
    DATABASE_URL="$MYSQL_URL" run_pytest "MariaDB" "$@"
else
    unavailable MariaDB "$MYSQL_URL"
fi

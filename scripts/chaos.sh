#!/usr/bin/env bash
# Run the chaos run (chaos/run.py) in the project's .venv. Arguments pass through.
#   scripts/chaos.sh --pooled [args...]: the workers go through a PgBouncer in transaction
#   mode (3 server connections, fewer than the workers' own) that this script starts.
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
ensure_venv
cd "$ROOT"
if [ "${1:-}" = "--pooled" ]; then
    shift
    PG_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/asyncjobs_chaos}"
    POOL_DIR="$(mktemp -d)"
    POOL_PORT="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    bash scripts/pgbouncer.sh start "$POOL_DIR" "$POOL_PORT" 3 >/dev/null
    trap 'bash scripts/pgbouncer.sh stop "$POOL_DIR"' EXIT
    POOLED="$("$VENV/bin/python" scripts/pg_url.py pooled "$PG_URL" "$POOL_PORT")"
    # The same database through the pooler (pg_url.py's "pooled" names its own database).
    export CHAOS_POOLED_URL="${POOLED%_pooled}"
    export DATABASE_URL="$PG_URL"
    echo "==> chaos run with the workers behind PgBouncer (transaction mode) on port $POOL_PORT" >&2
    "$VENV/bin/python" chaos/run.py "$@"
    exit $?
fi
exec "$VENV/bin/python" chaos/run.py "$@"

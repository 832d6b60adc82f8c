#!/usr/bin/env bash
# Start a throwaway PgBouncer in transaction pooling mode in front of the local PostgreSQL.
#   scripts/pgbouncer.sh start DIR [PORT [POOL_SIZE]]   # prints the port it listens on
#   scripts/pgbouncer.sh stop DIR
# Every database is forwarded to 127.0.0.1:5432; clients log in as any user listed in the
# auth file (postgres, root) without a password (the local cluster trusts them).
set -euo pipefail
cmd="$1"; dir="$2"
case "$cmd" in
start)
    port="${3:-6432}"; pool="${4:-4}"
    if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            echo "==> installing pgbouncer" >&2
            (apt-get install -y -qq pgbouncer || (apt-get update -qq && apt-get install -y -qq pgbouncer)) >/dev/null
        fi
    fi
    bin="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"
    [ -x "$bin" ] || { echo "pgbouncer is not installed (apt-get install pgbouncer)" >&2; exit 1; }
    mkdir -p "$dir"
    chmod 777 "$dir"
    printf '"postgres" ""\n"root" ""\n' > "$dir/users.txt"
    cat > "$dir/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/users.txt
pool_mode = transaction
default_pool_size = $pool
max_client_conn = 500
server_idle_timeout = 5
ignore_startup_parameters = extra_float_digits,options
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
    # PgBouncer refuses to run as root: run it as the postgres user where there is one.
    if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
        chown -R postgres "$dir"
        su postgres -s /bin/sh -c "'$bin' -d '$dir/pgbouncer.ini'"
    else
        "$bin" -d "$dir/pgbouncer.ini"
    fi
    for _ in $(seq 1 50); do
        pg_isready -h 127.0.0.1 -p "$port" -q 2>/dev/null && break
        sleep 0.1
    done
    echo "$port"
    ;;
stop)
    if [ -f "$dir/pgbouncer.pid" ]; then
        kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
    fi
    ;;
esac

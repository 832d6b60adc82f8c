#!/usr/bin/env bash
# Run the benchmark suite (bench/run.py; with --compare, bench/compare.py against the peers)
# in the project's .venv; with --soak, bench/soak.py; with --io, bench/io_bound.py (installing
# psycopg-pool for its asyncjobs-pool runs and its tasks' HTTP clients, as the bench extra
# of pyproject.toml); with --batches, bench/batches.py. Arguments pass through.
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
ensure_venv
cd "$ROOT"
if [ "${1:-}" = "--soak" ]; then
    shift
    "$VENV/bin/python" -c "import matplotlib" 2>/dev/null || "$VENV/bin/pip" install -q "matplotlib>=3.8"
    exec "$VENV/bin/python" bench/soak.py "$@"
fi
if [ "${1:-}" = "--io" ]; then
    shift
    "$VENV/bin/python" -c "import psycopg_pool, aiohttp, httpx_aiohttp, requests, sniffio" 2>/dev/null \
        || "$VENV/bin/pip" install -q "psycopg-pool>=3.2" "aiohttp>=3.10" "httpx-aiohttp>=0.2" \
            "requests>=2.32" "sniffio>=1.3"
    exec "$VENV/bin/python" bench/io_bound.py "$@"
fi
if [ "${1:-}" = "--batches" ]; then
    shift
    exec "$VENV/bin/python" bench/batches.py "$@"
fi
if [ "${1:-}" = "--compare" ]; then
    shift
    exec "$VENV/bin/python" bench/compare.py "$@"
fi
exec "$VENV/bin/python" bench/run.py "$@"

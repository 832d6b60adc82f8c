#!/usr/bin/env bash
# Run the benchmark suite (bench/run.py; with --compare, bench/compare.py against the peers)
# in the project's .venv; with --soak, bench/soak.py; with --batches, bench/batches.py.
# Arguments pass through.
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
ensure_venv
cd "$ROOT"
if [ "${1:-}" = "--soak" ]; then
    shift
    "$VENV/bin/python" -c "import matplotlib" 2>/dev/null || "$VENV/bin/pip" install -q "matplotlib>=3.8"
    exec "$VENV/bin/python" bench/soak.py "$@"
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

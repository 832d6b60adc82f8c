#!/usr/bin/env bash
# Run the chaos run (chaos/run.py) in the project's .venv. Arguments pass through.
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
ensure_venv
cd "$ROOT"
exec "$VENV/bin/python" chaos/run.py "$@"

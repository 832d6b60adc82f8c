#!/usr/bin/env bash
# The support matrix with nox (noxfile.py): every supported (Python, Django, database, driver).
#   scripts/matrix.sh                 # the whole matrix and the PostgreSQL versions (make matrix)
#   scripts/matrix.sh -s postgres_versions   # PostgreSQL 14, 16, 17, 18 (make pg-versions)
#   scripts/matrix.sh -s smoke        # the smoke subset (CI)
#   scripts/matrix.sh -l              # list the sessions
# PostgreSQL comes from DATABASE_URL (default postgres://postgres@127.0.0.1:5432/asyncjobs),
# except in the postgres_versions sessions, which start their own (scripts/pg_server.py).
# Each session's virtualenv is under .nox/ (kept between runs; pip's cache serves installs).
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
ensure_venv
cd "$ROOT"
# nox looks for python3.11, python3.12 and python3.13 on PATH; pyenv's shims answer "command
# not found" for versions that are installed but not selected, so put their bin/ first.
for v in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[1-3]*/bin; do
    [ -x "$v/python3" ] && PATH="$v:$PATH"
done
export PATH
exec "$VENV/bin/nox" "$@"

#!/usr/bin/env bash
# The support matrix with nox (noxfile.py): every supported (Python, Django, database, driver).
#   scripts/matrix.sh                 # the whole matrix (make matrix)
#   scripts/matrix.sh -s smoke        # the smoke subset (CI)
#   scripts/matrix.sh -l              # list the sessions
# PostgreSQL comes from DATABASE_URL (default postgres://postgres@127.0.0.1:5432/asyncjobs).
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

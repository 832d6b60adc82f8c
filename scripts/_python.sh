# Sourced by the other scripts: find a Python >= 3.11 and make .venv with the project installed
# (README's main combination: the newest Django on the newest Python found; Django 6 needs
# 3.12, on 3.11 the project gets Django 5.2 and the django-tasks backport).
# Set ASYNCJOBS_PYTHON to force an interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ASYNCJOBS_VENV:-$ROOT/.venv}"

find_python() {
    local candidates=()
    [ -n "${ASYNCJOBS_PYTHON:-}" ] && candidates+=("$ASYNCJOBS_PYTHON")
    candidates+=(python3.13 python3.12 python3.14 python3)
    # pyenv shims answer "command not found" for versions that are installed but not selected.
    for v in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[1-9]*/bin/python3; do
        [ -x "$v" ] && candidates+=("$v")
    done
    # Prefer 3.12+ (Django 6), wherever it is in the list; else 3.11 (Django 5.2).
    local minor
    for minor in 12 11; do
        for c in "${candidates[@]}"; do
            if "$c" -c "import sys; sys.exit(0 if sys.version_info >= (3, $minor) else 1)" >/dev/null 2>&1; then
                echo "$c"
                return 0
            fi
        done
    done
    echo "asyncjobs needs Python >= 3.11; none found. Set ASYNCJOBS_PYTHON=/path/to/python3.12" >&2
    return 1
}

# mysqlclient (a dev dependency: the suite runs on MariaDB too) builds against the MariaDB
# client library: install it with apt-get where it is missing, as .ci/run installs Chromium.
ensure_mysql_build_deps() {
    if command -v pkg-config >/dev/null 2>&1 \
        && { pkg-config --exists libmariadb || pkg-config --exists mysqlclient; }; then
        return 0
    fi
    if command -v apt-get >/dev/null 2>&1; then
        echo "==> installing libmariadb-dev and pkg-config (to build mysqlclient)" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq libmariadb-dev pkg-config; } >&2
    else
        echo "mysqlclient needs the MariaDB (or MySQL) client library and pkg-config:" \
            "install libmariadb-dev (Debian), mariadb-connector-c (Homebrew) or similar" >&2
        return 1
    fi
}

ensure_venv() {
    local stamp="$VENV/.installed"
    if [ ! -x "$VENV/bin/python" ]; then
        local py
        py="$(find_python)"
        echo "==> creating $VENV with $py" >&2
        "$py" -m venv "$VENV"
    fi
    # Reinstall when pyproject.toml changed since the last install.
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        ensure_mysql_build_deps
        echo "==> installing asyncjobs and its dev dependencies into $VENV" >&2
        "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
        "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]" >&2
        touch "$stamp"
    fi
}

"""Exit 0 when the PostgreSQL server named by the URL argument accepts connections.

Connects to the maintenance database so it works before the test database exists. Uses
psycopg 3, or psycopg2 where that is the driver installed (the matrix's psycopg2 sessions).
``pg_ready.py URL --drop NAME`` drops database NAME (closing its connections) instead.
"""

import sys
from urllib.parse import urlsplit, urlunsplit


def main(url: str, drop: str | None = None) -> int:
    parts = urlsplit(url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    try:
        import psycopg as driver
    except ImportError:
        import psycopg2 as driver  # type: ignore[no-redef]
    try:
        conn = driver.connect(admin_url, connect_timeout=3)
        conn.autocommit = True
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            if drop:
                # (A database name from our own scripts, quoted as an identifier.)
                quoted = '"' + drop.replace('"', '""') + '"'
                cursor.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        finally:
            conn.close()
    except driver.Error as exc:
        print(f"PostgreSQL unavailable: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[3] if sys.argv[2:3] == ["--drop"] else None))

"""Exit 0 when the PostgreSQL server named by the URL argument accepts connections.

Connects to the maintenance database so it works before the test database exists. Uses
psycopg 3, or psycopg2 where that is the driver installed (the matrix's psycopg2 sessions).
"""

import sys
from urllib.parse import urlsplit, urlunsplit


def main(url: str) -> int:
    parts = urlsplit(url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    try:
        import psycopg as driver
    except ImportError:
        import psycopg2 as driver  # type: ignore[no-redef]
    try:
        conn = driver.connect(admin_url, connect_timeout=3)
        try:
            conn.cursor().execute("SELECT 1")
        finally:
            conn.close()
    except driver.Error as exc:
        print(f"PostgreSQL unavailable: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

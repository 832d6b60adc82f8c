"""Exit 0 when the PostgreSQL server named by the URL argument accepts connections.

Connects to the maintenance database so it works before the test database exists.
``pg_ready.py URL --drop NAME`` drops database NAME (closing its connections) instead.
"""

import sys
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.sql


def main(url: str, drop: str | None = None) -> int:
    parts = urlsplit(url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    try:
        with psycopg.connect(admin_url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
            if drop:
                conn.execute(
                    psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        psycopg.sql.Identifier(drop)
                    )
                )
    except psycopg.Error as exc:
        print(f"PostgreSQL unavailable: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[3] if sys.argv[2:3] == ["--drop"] else None))

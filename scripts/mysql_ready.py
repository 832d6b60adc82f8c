"""Exit 0 when the MariaDB/MySQL server named by the URL argument accepts connections.

Connects without selecting a database so it works before the test database exists.
"""

import sys
from urllib.parse import unquote, urlsplit

import MySQLdb


def main(url: str) -> int:
    parts = urlsplit(url)
    try:
        conn = MySQLdb.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            connect_timeout=3,
        )
        conn.cursor().execute("SELECT 1")
        conn.close()
    except MySQLdb.Error as exc:
        print(f"MariaDB unavailable: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

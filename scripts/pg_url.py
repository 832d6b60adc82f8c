"""Bits of a postgres:// URL for the shell scripts.

pg_url.py port URL           the server's port (5432 when the URL names none)
pg_url.py pooled URL PORT    the URL of the same server through a local pooler on PORT,
                             with its own database (NAME_pooled)
pg_url.py name URL           the database's name
"""

import sys
from urllib.parse import urlsplit


def main(command: str, url: str, *rest: str) -> str:
    parts = urlsplit(url)
    if command == "port":
        return str(parts.port or 5432)
    if command == "name":
        return parts.path.lstrip("/") or "postgres"
    if command == "pooled":
        user = parts.username or "postgres"
        return parts._replace(
            netloc=f"{user}@127.0.0.1:{rest[0]}", path=parts.path + "_pooled"
        ).geturl()
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    print(main(*sys.argv[1:]))

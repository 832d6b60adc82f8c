"""Helpers shared by the benchmark, the peer comparison and the chaos run. Standard library
and psycopg (or psycopg2) or mysqlclient only: bench/peers/run_peer.py imports this in the
peers' virtualenv too."""

import json
import signal
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit


def recreate_database(url: str) -> None:
    """Drop and create the PostgreSQL or MariaDB/MySQL database ``url`` names, so that a run
    starts from an empty schema whatever an earlier run (or an older schema) left behind.
    PostgreSQL: psycopg 3, or psycopg2 where that is the driver installed (the benchmark's
    psycopg2 runs); MariaDB/MySQL: mysqlclient."""
    parts = urlsplit(url)
    if parts.scheme in ("mysql", "mariadb"):
        _recreate_mysql(parts.hostname or "127.0.0.1", parts.port or 3306, parts)
        return
    server = urlunsplit(parts._replace(path="/postgres"))
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(server)
        conn.autocommit = True
        statements = _recreate(sql, parts.path.lstrip("/"))
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        conn.close()
        return
    with psycopg.connect(server, autocommit=True) as conn:
        for statement in _recreate(sql, parts.path.lstrip("/")):
            conn.execute(statement)


def _recreate(sql, name: str) -> list:
    identifier = sql.Identifier(name)
    return [
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier),
        sql.SQL("CREATE DATABASE {}").format(identifier),
    ]


def _recreate_mysql(host: str, port: int, parts) -> None:
    import MySQLdb

    name = parts.path.lstrip("/").replace("`", "``")
    conn = MySQLdb.connect(
        host=host,
        port=port,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
    )
    try:
        cursor = conn.cursor()
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        # The character set and binary collation example_project.database asks of its test
        # databases, so that the bench's schema is the one the suite runs on.
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    finally:
        conn.close()


def stop_workers(procs: list[subprocess.Popen], timeout: float = 60) -> None:
    """SIGTERM every process, then wait for each (SIGKILL after ``timeout`` seconds)."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def write_results(directory: Path, prefix: str, report: dict[str, Any]) -> Path:
    """Write ``report`` to ``directory/<prefix><report["when"], colons dropped>.json`` (the
    directory made if need be) and return the file's path."""
    directory.mkdir(exist_ok=True)
    path = directory / f"{prefix}{report['when'].replace(':', '')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path

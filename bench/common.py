"""Helpers shared by the benchmark, the peer comparison and the chaos run. Standard library
and psycopg (or psycopg2) only: bench/peers/run_peer.py imports this in the peers' virtualenv
too."""

import signal
import subprocess
from urllib.parse import urlsplit, urlunsplit


def recreate_database(url: str) -> None:
    """Drop and create the PostgreSQL database ``url`` names, so that a run starts from an
    empty schema whatever an earlier run (or an older schema) left behind. psycopg 3, or
    psycopg2 where that is the driver installed (the benchmark's psycopg2 runs)."""
    parts = urlsplit(url)
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

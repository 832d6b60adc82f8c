"""Helpers shared by the benchmark, the peer comparison and the chaos run. Standard library
and psycopg only: bench/peers/run_peer.py imports this in the peers' virtualenv too."""

import signal
import subprocess
from urllib.parse import urlsplit, urlunsplit


def recreate_database(url: str) -> None:
    """Drop and create the PostgreSQL database ``url`` names, so that a run starts from an
    empty schema whatever an earlier run (or an older schema) left behind."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = sql.Identifier(parts.path.lstrip("/"))
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


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

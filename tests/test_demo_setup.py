"""README's demo command, its set-up steps (migrate, demo_setup) in a temporary directory,
as on a fresh clone: the example project's own settings, a new SQLite file."""

import os
import re
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.sqlite, pytest.mark.slow, pytest.mark.subprocess]


def manage(tmp_path, *args):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "ASYNCJOBS_", "DJANGO_"))
    }
    env |= {
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "DJANGO_DEBUG": "1",  # as scripts/demo.sh sets it (the settings default is off)
        "PYTHONPATH": str(ROOT),
        "ASYNCJOBS_DB_NAME": str(tmp_path / "demo.sqlite3"),
        "DEMO_MEDIA_ROOT": str(tmp_path / "media"),
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_set_up_from_scratch(tmp_path):
    migrate = manage(tmp_path, "migrate", "--verbosity", "0")
    assert migrate.returncode == 0, migrate.stderr
    setup = manage(tmp_path, "demo_setup")
    assert setup.returncode == 0, setup.stderr
    assert re.search(r"Admin user: admin / password: \S{12}", setup.stdout)
    assert "Enqueued 20 demo jobs" in setup.stdout
    check = manage(tmp_path, "check", "--fail-level", "WARNING")
    assert check.returncode == 0, check.stdout + check.stderr

    with sqlite3.connect(tmp_path / "demo.sqlite3") as db:
        queues = dict(
            db.execute("SELECT queue_name, count(*) FROM asyncjobs_job GROUP BY queue_name")
        )
        products = db.execute("SELECT count(*) FROM demo_product").fetchone()[0]
        batches = db.execute("SELECT description, total FROM asyncjobs_batch").fetchall()
    assert queues == {"default": 4, "emails": 2, "reports": 4, "partner": 10}
    assert sorted(total for _, total in batches) == [4, 5]
    assert products == 3
    # Running it again (a second `make demo`) keeps the data and resets the password.
    again = manage(tmp_path, "demo_setup")
    assert again.returncode == 0, again.stderr

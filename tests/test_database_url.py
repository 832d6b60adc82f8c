"""``example_project.database.database_from_env``: DATABASE_URL to Django's DATABASES."""

from pathlib import Path

import pytest

from example_project.database import database_from_env

SQLITE = Path("/tmp/x.sqlite3")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("ASYNCJOBS_DB_NAME", raising=False)


@pytest.mark.parametrize("scheme", ["mysql", "mariadb"])
def test_a_mysql_url_selects_mariadb_with_utf8mb4_and_read_committed(monkeypatch, scheme):
    monkeypatch.setenv("DATABASE_URL", f"{scheme}://app:p%40ss@db.example:3307/shop")
    settings = database_from_env(SQLITE)
    assert settings["ENGINE"] == "django.db.backends.mysql"
    assert (settings["NAME"], settings["USER"], settings["PASSWORD"]) == ("shop", "app", "p@ss")
    assert (settings["HOST"], settings["PORT"]) == ("db.example", "3307")
    assert settings["OPTIONS"] == {"charset": "utf8mb4", "isolation_level": "read committed"}
    assert settings["TEST"] == {
        "NAME": "shop_test",
        "CHARSET": "utf8mb4",
        "COLLATION": "utf8mb4_bin",
    }


def test_the_name_override_reaches_mariadb_too(monkeypatch):
    """Worker subprocesses of the tests are pointed at the test database this way."""
    monkeypatch.setenv("DATABASE_URL", "mysql://root@127.0.0.1/shop")
    monkeypatch.setenv("ASYNCJOBS_DB_NAME", "shop_test")
    settings = database_from_env(SQLITE)
    assert settings["NAME"] == "shop_test"
    assert settings["PORT"] == ""


def test_a_postgres_url_selects_postgresql(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://u@h:5433/d")
    settings = database_from_env(SQLITE)
    assert settings["ENGINE"] == "django.db.backends.postgresql"
    assert (settings["NAME"], settings["PORT"]) == ("d", "5433")
    assert "OPTIONS" not in settings


def test_no_url_selects_sqlite():
    assert database_from_env(SQLITE)["ENGINE"] == "django.db.backends.sqlite3"


def test_another_scheme_is_refused(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "oracle://u@h/d")
    with pytest.raises(ValueError, match="oracle://"):
        database_from_env(SQLITE)

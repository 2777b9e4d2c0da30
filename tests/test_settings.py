"""Database selection from the environment (ENERGYMON_DATABASE_URL, the original POSTGRES_*
variables, the embedded SQLite default)."""

from __future__ import annotations

import pytest

from energymon_pipeline import settings
from energymon_pipeline.errors import SettingsError


def test_explicit_url_wins():
    env = {"ENERGYMON_DATABASE_URL": "postgresql+psycopg2://u:p@db:5433/reg", "POSTGRES_HOST": "x"}
    url = settings.database_url(env)
    assert (url.host, url.port, url.database, url.username) == ("db", 5433, "reg", "u")


def test_original_postgres_variables():
    env = {
        "POSTGRES_HOST": "default_db",
        "POSTGRES_PORT": "5432",
        "POSTGRES_USER": "admin",
        "POSTGRES_PASSWORD": "s3cr:t@",
        "POSTGRES_DB": "default",
    }
    url = settings.database_url(env)
    assert url.drivername == "postgresql+psycopg2"
    assert (url.host, url.port, url.username, url.password, url.database) == (
        "default_db", 5432, "admin", "s3cr:t@", "default",
    )  # fmt: skip


@pytest.mark.parametrize(
    "typed",
    [
        "postgresql://energy:pw@db.local:5433/meters",
        "postgres://energy:pw@db.local:5433/meters",
        "postgresql+psycopg2://energy:pw@db.local:5433/meters",
    ],
)
def test_the_postgresql_urls_users_type_use_the_installed_driver(typed):
    # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, which is not installed.
    url = settings.database_url({"ENERGYMON_DATABASE_URL": typed})
    assert url.drivername == "postgresql+psycopg2"
    assert (url.host, url.port, url.password, url.database) == ("db.local", 5433, "pw", "meters")
    url.get_dialect().import_dbapi()  # the driver really is installed


@pytest.mark.parametrize(
    ("typed", "scheme"),
    [
        ("postgresql+psycopg://u:topsecret@h/db", "postgresql+psycopg"),
        ("postgresql+asyncpg://u:topsecret@h/db", "postgresql+asyncpg"),
        ("mysql://u:topsecret@h/db", "mysql"),
        ("mssql+pyodbc://u:topsecret@h/db", "mssql+pyodbc"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite"),
        ("http://u:topsecret@h/db", "http"),
    ],
)
def test_unusable_urls_name_the_scheme_and_what_is_supported(typed, scheme):
    with pytest.raises(SettingsError) as error:
        settings.database_url({"ENERGYMON_DATABASE_URL": typed})
    message = str(error.value)
    assert message.startswith(
        f"ENERGYMON_DATABASE_URL uses the scheme {scheme!r}, which energymon cannot use; "
        "allowed: postgresql://"
    )
    assert "\n" not in message and "topsecret" not in message


def test_an_unparseable_url_is_not_echoed():
    with pytest.raises(SettingsError) as error:
        settings.database_url({"ENERGYMON_DATABASE_URL": "postgresql//u:topsecret@h:x/db"})
    assert "topsecret" not in str(error.value)


def test_embedded_sqlite_default(tmp_path):
    assert settings.database_url({}).database == ".energymon/registry.sqlite"
    url = settings.database_url({"ENERGYMON_DATA_DIR": str(tmp_path)})
    assert url.drivername == "sqlite"
    assert url.database == str(tmp_path / "registry.sqlite")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ENERGYMON_DATABASE_URL": "not a url"}, "ENERGYMON_DATABASE_URL is not a database URL (no scheme://); allowed: postgresql://"),
        ({"POSTGRES_HOST": "h", "POSTGRES_PORT": "54x"}, "POSTGRES_PORT='54x' is not an integer; allowed: a whole number from 1 to 65535"),
        ({"POSTGRES_HOST": "h", "POSTGRES_PORT": "0"}, "POSTGRES_PORT=0 is out of range; allowed: 1 to 65535"),
    ],
)  # fmt: skip
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(SettingsError) as error:
        settings.database_url(env)
    assert message in str(error.value)


def test_virtual_server_defaults_and_override():
    assert settings.virtual_server({}) == settings.VirtualServerSettings("localhost", 5020)
    assert settings.virtual_server({"VIRTUAL_SERVER_HOST": "vs", "VIRTUAL_SERVER_PORT": "502"}) == (
        settings.VirtualServerSettings("vs", 502)
    )
    with pytest.raises(SettingsError, match="VIRTUAL_SERVER_PORT=70000 is out of range"):
        settings.virtual_server({"VIRTUAL_SERVER_PORT": "70000"})

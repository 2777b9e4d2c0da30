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


def test_embedded_sqlite_default(tmp_path):
    assert settings.database_url({}).database == ".energymon/registry.sqlite"
    url = settings.database_url({"ENERGYMON_DATA_DIR": str(tmp_path)})
    assert url.drivername == "sqlite"
    assert url.database == str(tmp_path / "registry.sqlite")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ENERGYMON_DATABASE_URL": "not a url"}, "ENERGYMON_DATABASE_URL='not a url' is not a database URL"),
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

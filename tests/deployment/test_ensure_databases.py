"""config/postgres/ensure_databases.py, which the code server runs before migrating the
registry, against the real PostgreSQL server: it creates the registry and Dagster databases
when missing, leaves existing ones alone (a second start changes nothing), and refuses one
database for both."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa
from deployment_files import ROOT

SCRIPT = ROOT / "config" / "postgres" / "ensure_databases.py"


def run_script(url: sa.URL, registry: str, dagster: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "POSTGRES_HOST": url.host or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_DB": registry,
        "DAGSTER_POSTGRES_DB": dagster,
        "ENSURE_DATABASES_TIMEOUT_S": "5",
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )


def existing(admin: sa.Engine, names: list[str]) -> set[str]:
    with admin.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT datname FROM pg_database WHERE datname = ANY(:names)"),
            {"names": names},
        )
        return {row[0] for row in rows}


def test_creates_missing_databases_once_and_keeps_existing_ones(postgres_url):
    # postgres_url: this session's throwaway database (exists), and a server that answers.
    url = sa.make_url(postgres_url)
    registry, dagster = url.database, f"energymon_dagster_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        first = run_script(url, registry, dagster)
        assert first.returncode == 0, first.stderr
        assert f"database {registry!r} exists" in first.stdout
        assert f"created database {dagster!r}" in first.stdout
        assert existing(admin, [registry, dagster]) == {registry, dagster}
        second = run_script(url, registry, dagster)
        assert second.returncode == 0, second.stderr
        assert "created" not in second.stdout
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{dagster}" WITH (FORCE)'))
        admin.dispose()


def test_refuses_one_database_for_registry_and_dagster(postgres_url):
    url = sa.make_url(postgres_url)
    result = run_script(url, url.database, url.database)
    assert result.returncode == 1
    assert "need separate databases" in result.stderr


@pytest.mark.timeout(60)
def test_an_unreachable_server_is_reported_after_the_timeout(refused_port):
    url = sa.make_url(f"postgresql://nobody@127.0.0.1:{refused_port}/postgres")
    result = run_script(url, "registry", "dagster")
    assert result.returncode == 1
    assert result.stderr.startswith("ensure_databases: PostgreSQL not reachable:")

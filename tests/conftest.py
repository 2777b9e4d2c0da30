"""Real services for the tests: PostgreSQL (the machine's server, a throwaway database per
session) and SQLite files. In CI (CI=true) a missing service fails the run; elsewhere it skips
the tests that need it."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from energymon_pipeline.cli import cli
from energymon_pipeline.registry import db

pytest_plugins = ["influx_fixtures"]

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get(
    "ENERGYMON_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def service_missing(message: str) -> None:
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service is a failure)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_admin():
    """An AUTOCOMMIT engine on the machine's PostgreSQL, for creating test databases."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as error:
        admin.dispose()
        service_missing(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {error.orig}")
    yield admin
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_url(postgres_admin) -> str:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"energymon_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with postgres_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(PG_ADMIN_URL).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with postgres_admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _reset_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP SCHEMA public CASCADE"))
        connection.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request, tmp_path) -> str:
    """An empty registry database URL, once per backend (every registry test runs on both)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.sqlite'}"
    url = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def registry(registry_url):
    engine = db.create_engine(registry_url)
    yield engine
    engine.dispose()


@pytest.fixture
def migrated(registry):
    db.upgrade(registry)
    return registry


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def energymon(registry_url, monkeypatch):
    """Runs the `energymon` command in-process against the test registry."""
    monkeypatch.setenv("ENERGYMON_DATABASE_URL", registry_url)

    def run(*args: str) -> CliResult:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def fetch():
    """fetch(engine, sql) -> the result rows as tuples (for asserting what is stored)."""

    def run(engine, sql: str, **params) -> list[tuple]:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(sa.text(sql), params)]

    return run


@pytest.fixture
def modbus_server():
    """The virtual Modbus TCP server on a free loopback port, serving `server.devices`
    (unit id -> DeviceMemory); `server.requests` lists what arrived on the wire."""
    from virtual_server import DeviceMemoryServer

    server = DeviceMemoryServer({}, host="127.0.0.1", port=0)
    server.start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
def silent_port():
    """A loopback port that accepts TCP connections but never answers (a hung device)."""
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def refused_port():
    """A loopback port nobody listens on."""
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


@pytest.fixture(autouse=True)
def _no_dagster_instance_left_current():
    """A test must leave no Dagster instance "current": an instance's context (`with
    instance`, or a schedule or sensor context built without `with`, closed when Python
    collects it) sets the defs-state storage every later definitions load reads. Left set
    to a closed instance, every later test that loads definitions fails with "Attempted to
    resolve undefined DagsterInstance weakref", depending on when the garbage collector ran.
    This fails the test that leaves it instead, and puts it back for the next ones."""
    from dagster._core.storage.defs_state import base

    before = base.DefsStateStorage.get()
    yield
    after = base.DefsStateStorage.get()
    if after is not before:
        base._current_storage.set(before)
        pytest.fail(
            "this test left a Dagster instance current (use `with` on instances and on "
            "build_schedule_context/build_sensor_context)",
            pytrace=False,
        )

"""Fixtures of the end-to-end tests: one running system per test session (see e2e_system.py),
shared by the GraphQL tests and the browser test, since starting it costs ~20 s on two cores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from e2e_system import REGISTRY_SECRET, RunningSystem, tail

from virtual_server import DeviceMemoryServer

_current: RunningSystem | None = None


@pytest.fixture(scope="session")
def e2e_registry_url(postgres_admin) -> Iterator[str]:
    """A PostgreSQL database of the running system's own (other tests reset theirs while it
    runs), as `postgresql://postgres:<secret>@...`: the plain scheme most users type."""
    name = f"energymon_e2e_{uuid.uuid4().hex[:12]}"
    with postgres_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = postgres_admin.url.set(drivername="postgresql", password=REGISTRY_SECRET, database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with postgres_admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def running_system(tmp_path_factory, influxd, e2e_registry_url) -> Iterator[RunningSystem]:
    """The running webserver and daemon of this session (see the module docstring)."""
    global _current
    modbus = DeviceMemoryServer({}, host="127.0.0.1", port=0)
    modbus.start_in_thread()
    system = RunningSystem(tmp_path_factory.mktemp("e2e"), influxd, modbus, e2e_registry_url)
    try:
        system.prepare()
        _current = system
        system.start()
        yield system
    finally:
        system.stop()  # _current stays: its logs are still there for a failing test's report
        modbus.stop_thread()
        client = influxd.client()
        try:
            client.drop_database(system.influx_db)
        finally:
            client.close()


@pytest.fixture(scope="session")
def poll_run(running_system) -> dict[str, Any]:
    """A successful poll_meters_job run launched through the API (launched once a session;
    the GraphQL test asserts on it, the browser test opens it)."""
    run_id = running_system.launch_poll_run()
    status = running_system.wait_for_run(run_id)
    return {"run_id": run_id, "status": status}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test that used the running system gets the processes' log tails in its
    report (the logs themselves stay in the temp folder)."""
    report = yield
    if report.failed and _current is not None and "running_system" in item.fixturenames:
        for name, path in _current.logs.items():
            report.sections.append((f"{name} log ({path})", tail(path, 80)))
    return report

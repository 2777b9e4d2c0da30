"""Fixtures of the end-to-end tests: one running system per test session (see e2e_system.py),
shared by the GraphQL tests and the browser test, since starting it costs ~20 s on two cores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from e2e_system import RunningSystem, tail

from virtual_server.server import VirtualModbusServer

_current: RunningSystem | None = None


@pytest.fixture(scope="session")
def running_system(tmp_path_factory, influxd) -> Iterator[RunningSystem]:
    """The running webserver and daemon of this session (see the module docstring)."""
    global _current
    modbus = VirtualModbusServer({}, host="127.0.0.1", port=0)
    modbus.start_in_thread()
    system = RunningSystem(tmp_path_factory.mktemp("e2e"), influxd, modbus)
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

"""A real InfluxDB 1.x server for the tests: this session's own `influxd`, on free loopback ports,
with its config (rendered from config/influxdb/private-influxd.conf), meta, data and WAL in a
temp folder, usage reporting off. Not a mock and not a shared instance: nothing outside the
temp folder is written.

Load it as a plugin: `pytest_plugins = ["influx_fixtures"]` in tests/conftest.py (tests/ is on
sys.path because that conftest has no package around it), or `-p influx_fixtures` with
PYTHONPATH=tests.

`scripts/ensure-services.sh` installs the binary (Debian package `influxdb`). In CI (CI=true) a
missing binary fails the tests that need it; elsewhere they are skipped.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from influxdb import InfluxDBClient

from energymon_pipeline.influx.private_influxd import config_text
from energymon_pipeline.influx.writer import InfluxTarget

IN_CI = os.environ.get("CI", "").lower() == "true"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-test-password"
_PR_SET_PDEATHSIG = 1


def _service_missing(message: str) -> None:
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service is a failure)")
    pytest.skip(message)


def _die_with_parent() -> None:
    """In the child before exec: on Linux, have the kernel SIGTERM influxd when the test process
    dies without running its teardown (e.g. killed), so no server outlives the session."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class InfluxServer:
    """One influxd process. `stop()` and `start()` keep its port and data folder, so a test can
    simulate an outage and the server comes back with what it had."""

    host = "127.0.0.1"

    def __init__(self, binary: str, root: Path, *, auth_enabled: bool = False) -> None:
        self.binary = binary
        self.root = root
        self.auth_enabled = auth_enabled
        self.port = _free_port()
        self.rpc_port = _free_port()
        self.config_path = root / "influxdb.conf"
        self.log_path = root / "influxd.log"
        self._process: subprocess.Popen | None = None
        self._write_config()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_config(self) -> None:
        self.config_path.write_text(
            config_text(self.root, self.port, self.rpc_port, auth_enabled=self.auth_enabled),
            encoding="utf-8",
        )

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Starts influxd and waits (bounded) until /ping answers 204."""
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [self.binary, "run", "-config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"influxd exited with code {self._process.returncode} while starting on "
                    f"{self.url}; log {self.log_path}:\n{self._log_tail()}"
                )
            if self._ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"influxd did not answer /ping on {self.url} within {timeout_s:.0f} s; "
            f"log {self.log_path}:\n{self._log_tail()}"
        )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Terminates influxd (SIGTERM, bounded wait, then SIGKILL)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)

    def _ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as response:
                return response.status == 204
        except (urllib.error.URLError, OSError):
            return False

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def client(
        self,
        database: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> InfluxDBClient:
        """A client for test setup and assertions; as the admin unless told otherwise."""
        if username is None and self.auth_enabled:
            username, password = ADMIN_USER, ADMIN_PASSWORD
        return InfluxDBClient(
            host=self.host,
            port=self.port,
            username=username,
            password=password,
            database=database,
            timeout=10,
            retries=1,
        )

    def target(self, database: str, **overrides: Any) -> InfluxTarget:
        """An `InfluxTarget` for this server (as the admin on an auth-enabled server)."""
        credentials = (
            {"username": ADMIN_USER, "password": ADMIN_PASSWORD} if self.auth_enabled else {}
        )
        return InfluxTarget(
            **{"host": self.host, "port": self.port, "database": database, "timeout_s": 5.0}
            | credentials
            | overrides
        )

    def query(self, q: str, database: str | None = None, epoch: str = "ms") -> list[dict]:
        """Runs an InfluxQL query; returns its rows as dicts (columns, plus the series' tags
        for GROUP BY queries and `name` for the measurement), timestamps as epoch `epoch`."""
        client = self.client(database)
        try:
            result = client.query(q, database=database, epoch=epoch)
        finally:
            client.close()
        rows = []
        for series in result.raw.get("series", []):
            for values in series.get("values", []):
                row = dict(zip(series["columns"], values, strict=True))
                row.update(series.get("tags") or {})
                row.setdefault("name", series.get("name"))
                rows.append(row)
        return rows

    def create_user(self, name: str, password: str, grants: dict[str, str] | None = None) -> None:
        """Creates a non-admin user with the given privileges ({database: READ|WRITE|ALL})."""
        client = self.client()
        try:
            client.create_user(name, password)
            for database, privilege in (grants or {}).items():
                client.grant_privilege(privilege, database, name)
        finally:
            client.close()


def _influxd_binary() -> str | None:
    configured = os.environ.get("ENERGYMON_TEST_INFLUXD")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("influxd")


def _start_server(tmp_path_factory, *, auth_enabled: bool) -> InfluxServer:
    binary = _influxd_binary()
    if binary is None:
        _service_missing(
            "influxd (InfluxDB 1.x) is not installed (or ENERGYMON_TEST_INFLUXD is not an "
            "executable); scripts/ensure-services.sh installs it"
        )
    last_error: Exception | None = None
    for _ in range(3):  # a free port can be taken between probing and binding
        server = InfluxServer(binary, tmp_path_factory.mktemp("influxd"), auth_enabled=auth_enabled)
        try:
            server.start()
        except RuntimeError as error:
            last_error = error
            continue
        if auth_enabled:
            # With auth on and no users yet, influxd accepts the first admin user unauthenticated.
            client = InfluxDBClient(host=server.host, port=server.port, timeout=10, retries=1)
            try:
                client.create_user(ADMIN_USER, ADMIN_PASSWORD, admin=True)
            finally:
                client.close()
        return server
    pytest.fail(f"could not start influxd: {last_error}")


@pytest.fixture(scope="session")
def influxd(tmp_path_factory):
    """This session's influxd (auth off), stopped at the end of the session."""
    server = _start_server(tmp_path_factory, auth_enabled=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def influxd_auth(tmp_path_factory):
    """A second influxd with auth on and an admin user (`ADMIN_USER`), for permission tests;
    started only when a test asks for it."""
    server = _start_server(tmp_path_factory, auth_enabled=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def influx_db(influxd):
    """A fresh database name on `influxd` (not created: writers create it), dropped after."""
    name = f"energymon_test_{uuid.uuid4().hex[:12]}"
    yield name
    if not influxd.running:  # a test that stopped the server leaves it running again
        influxd.start()
    client = influxd.client()
    try:
        client.drop_database(name)
    finally:
        client.close()

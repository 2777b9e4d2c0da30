"""The running system for the end-to-end tests (used through tests/e2e/conftest.py): the real
`dagster-webserver` and `dagster-daemon run` as subprocesses, on a temp DAGSTER_HOME (the
project's config/dagster.local.yaml as its dagster.yaml) with the project's workspace
(config/workspace.local.yaml), a PostgreSQL registry of its own whose virtual meter (id 0)
points at a real Modbus server, and the session's real influxd.

The registry is reached through ENERGYMON_DATABASE_URL in the form most users type
(`postgresql://user:password@host/db`), with a password (`REGISTRY_SECRET`; the machine's
trust auth ignores it) that must never show in the UI, the API, the run history or the logs.

Both processes run in their own process groups and are stopped at the end whatever happened,
with the code servers and run workers they spawned. Their logs are kept in the temp folder and
printed under a failing test's report.

When the Dagster processes cannot be started at all, the tests are skipped, or fail in CI
(CI=true). A code location that fails to load is a failure everywhere: that is the product's
fault, not the machine's.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from dagster_graphql import DagsterGraphQLClient

from energymon_pipeline.registry import db
from virtual_server import DeviceMemory, DeviceMemoryServer

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
WORKSPACE = REPO_ROOT / "config" / "workspace.local.yaml"
INSTANCE_CONFIG = REPO_ROOT / "config" / "dagster.local.yaml"

LOCATION = "energymon"
REPOSITORY = "__repository__"  # the name Dagster gives the repository of a dg.Definitions
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
RUN_TIMEOUT_S = 90.0
#: new_meter_sensor's interval in the test (ENERGYMON_SENSOR_INTERVAL_S; 5 s is its minimum).
SENSOR_INTERVAL_S = 5
#: The virtual meter's register 0 (INT16) on the test server: -123.
VIRTUAL_METER_RAW = 0xFF85
VIRTUAL_METER_VALUE = -123.0

#: Variables the definitions read; the test process's own values must not leak into the
#: system under test (a developer's shell may have an env file loaded).
_SETTINGS_PREFIXES = (
    "ENERGYMON_",
    "INFLUXDB_",
    "INFLUX_UPDATER_CRON_",
    "SCHEDULER_CRON_",
    "POSTGRES_",
    "VIRTUAL_SERVER_",
    "DAGSTER_",
)
_PR_SET_PDEATHSIG = 1

DONE_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
#: The registry password of the running system (see the module docstring).
REGISTRY_SECRET = f"registry-secret-{uuid.uuid4().hex}"


def unavailable(message: str) -> None:
    """The machine cannot run this test: skip it, or fail in CI."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service is a failure)")
    pytest.skip(message)


def _die_with_parent() -> None:
    """In the child before exec: the kernel SIGTERMs it when the test process dies without
    running its teardown, so no webserver or daemon outlives the session."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_groups(processes: list[subprocess.Popen], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to each process group (the process and what it spawned: code servers, run
    workers), a bounded wait for the leaders and the rest of their groups, then SIGKILL to
    whatever is left."""
    groups = [process.pid for process in processes]  # start_new_session: leader pid = group id
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    deadline = time.monotonic() + 5.0
    while any(_group_alive(pgid) for pgid in groups) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pgid in groups:
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)


_LOCATIONS_QUERY = """
query E2eLocations {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { repositories { name } }
          ... on PythonError { message stack causes { message stack } }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

_DAEMONS_QUERY = """
query E2eDaemons {
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
}
"""

RUNS_QUERY = """
query E2eRuns($filter: RunsFilter, $limit: Int) {
  runsOrError(filter: $filter, limit: $limit) {
    __typename
    ... on Runs {
      results {
        runId
        jobName
        status
        creationTime
        runConfigYaml
        tags { key value }
      }
    }
    ... on PythonError { message }
    ... on InvalidPipelineRunsFilterError { message }
  }
}
"""

_RUN_FAILURE_QUERY = """
query E2eRunEvents($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      eventConnection(limit: 200) {
        events {
          __typename
          ... on MessageEvent { message level }
          ... on ExecutionStepFailureEvent { error { message } }
          ... on RunFailureEvent { error { message } }
        }
      }
    }
  }
}
"""


class RunningSystem:
    """The webserver and daemon of one test session, and what they were started with."""

    host = "127.0.0.1"

    def __init__(self, root: Path, influxd, modbus: DeviceMemoryServer, registry_url: str) -> None:
        self.root = root
        self.influxd = influxd
        self.modbus = modbus
        self.influx_db = f"energymon_e2e_{uuid.uuid4().hex[:12]}"
        #: `postgresql://postgres:<REGISTRY_SECRET>@host:port/db`.
        self.registry_url = registry_url
        self.dagster_home = root / "dagster_home"
        self.port = _free_port()
        self.url = f"http://{self.host}:{self.port}"
        self.logs = {
            "dagster-webserver": root / "webserver.log",
            "dagster-daemon": root / "daemon.log",
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self.client = DagsterGraphQLClient(self.host, port_number=self.port, timeout=30)
        self.env = self._env()

    # -- setup -------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS_PREFIXES)}
        env.update(
            {
                "DAGSTER_HOME": str(self.dagster_home),
                "ENERGYMON_DATABASE_URL": self.registry_url,
                "ENERGYMON_DATA_DIR": str(self.root / "data"),
                "ENERGYMON_SPOOL_DIR": str(self.root / "spool"),
                "ENERGYMON_SENSOR_INTERVAL_S": str(SENSOR_INTERVAL_S),
                "INFLUXDB_HOSTNAME": self.influxd.host,
                "INFLUXDB_PORT": str(self.influxd.port),
                "INFLUXDB_DB": self.influx_db,
                # The project's defaults, spelled out: a poll run every minute at second 0.
                "INFLUX_UPDATER_CRON_HOUR_TRIGGER": "*",
                "INFLUX_UPDATER_CRON_MINUTE_TRIGGER": "*/1",
                "INFLUX_UPDATER_CRON_SECOND_TRIGGER": "0",
                "TZ": "UTC",
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def prepare(self) -> None:
        """DAGSTER_HOME with the project's instance config; the registry migrated (seeded with
        the virtual meter), its meter 0 pointed at the test Modbus server."""
        self.dagster_home.mkdir()
        shutil.copyfile(INSTANCE_CONFIG, self.dagster_home / "dagster.yaml")
        engine = db.create_engine(self.registry_url)
        try:
            db.upgrade(engine)
            with engine.begin() as connection:
                connection.exec_driver_sql(
                    "UPDATE energy_meters SET host = '127.0.0.1', "
                    f"port = {self.modbus.port}, slave_address = 0 WHERE id = 0"
                )
        finally:
            engine.dispose()
        self.modbus.devices[0] = DeviceMemory(holding_registers={0: VIRTUAL_METER_RAW})

    def _spawn(self, name: str, args: list[str]) -> None:
        executable = VENV_BIN / args[0]
        if not os.access(executable, os.X_OK):
            unavailable(f"{executable} is not installed (uv sync installs dagster-webserver)")
        with open(self.logs[name], "ab") as log:
            self.processes[name] = subprocess.Popen(
                [str(executable), *args[1:]],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Starts both processes and waits (bounded) until the webserver answers GraphQL, the
        code location is loaded and the daemons report healthy."""
        workspace = ["-w", str(WORKSPACE)]
        self._spawn(
            "dagster-webserver",
            ["dagster-webserver", "-h", self.host, "-p", str(self.port), *workspace],
        )
        self._spawn("dagster-daemon", ["dagster-daemon", "run", *workspace])
        deadline = time.monotonic() + timeout_s
        self._wait(deadline, "the webserver to answer /server_info", self._server_info)
        self._wait(deadline, f"code location {LOCATION!r} to load", self._location_loaded)
        self._wait(deadline, "the daemons to report healthy", self._daemons_healthy)

    def _wait(self, deadline: float, what: str, ready: Callable[[], bool]) -> None:
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    unavailable(
                        f"{name} exited with code {process.returncode} while waiting for "
                        f"{what}; log {self.logs[name]}:\n{tail(self.logs[name])}"
                    )
            if ready():
                return
            time.sleep(0.5)
        unavailable(f"timed out waiting for {what} ({self.url})\n{self.log_tails()}")

    def _server_info(self) -> bool:
        try:
            return requests.get(f"{self.url}/server_info", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def _location_loaded(self) -> bool:
        data = self.gql(_LOCATIONS_QUERY)["workspaceOrError"]
        if data["__typename"] != "Workspace":
            pytest.fail(f"the webserver could not load its workspace: {data.get('message')}")
        entries = {e["name"]: e for e in data["locationEntries"]}
        entry = entries.get(LOCATION)
        if entry is None:
            pytest.fail(f"the workspace has no location {LOCATION!r}: {sorted(entries)}")
        if entry["loadStatus"] != "LOADED" or entry["locationOrLoadError"] is None:
            return False
        loaded = entry["locationOrLoadError"]
        if loaded["__typename"] == "PythonError":
            # The user's own exception is the last cause; Dagster's wrapper comes first.
            causes = "".join(
                f"\ncaused by: {c['message']}{''.join(c['stack'][-6:])}" for c in loaded["causes"]
            )
            pytest.fail(f"code location {LOCATION!r} failed to load: {loaded['message']}{causes}")
        return True

    def _daemons_healthy(self) -> bool:
        statuses = self.gql(_DAEMONS_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
        return all(s["healthy"] for s in statuses if s["required"])

    def stop(self) -> None:
        _stop_groups(list(self.processes.values()))

    def log_tails(self, lines: int = 60) -> str:
        return "\n".join(
            f"--- {name} ({path}), last {lines} lines:\n{tail(path, lines)}"
            for name, path in self.logs.items()
        )

    # -- the GraphQL API ---------------------------------------------------------------------

    def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """A raw GraphQL query or mutation (the client has no methods for schedules, sensors
        or run lists)."""
        return self.client._execute(query, variables)

    def runs(
        self, job_name: str, limit: int = 50, statuses: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """The job's runs (with one of `statuses`, when given), newest first."""
        run_filter: dict[str, Any] = {"pipelineName": job_name}
        if statuses:
            run_filter["statuses"] = statuses
        data = self.gql(RUNS_QUERY, {"filter": run_filter, "limit": limit})
        result = data["runsOrError"]
        assert result["__typename"] == "Runs", result
        return result["results"]

    def run_messages(self, run_id: str) -> str:
        """The run's log messages and errors, for failure messages."""
        data = self.gql(_RUN_FAILURE_QUERY, {"runId": run_id})
        events = (data["runOrError"] or {}).get("eventConnection", {}).get("events", [])
        lines = []
        for event in events:
            if event.get("error"):
                lines.append(f"{event['__typename']}: {event['error']['message']}")
            elif event.get("message"):
                lines.append(f"{event['__typename']}: {event['message']}")
        return "\n".join(lines[-40:])

    def wait_for_run(self, run_id: str, timeout_s: float = RUN_TIMEOUT_S) -> str:
        """Waits (bounded) until the run is done; returns its final status."""
        deadline = time.monotonic() + timeout_s
        status = None
        while time.monotonic() < deadline:
            status = self.client.get_run_status(run_id).value
            if status in DONE_STATUSES:
                return status
            time.sleep(0.5)
        raise AssertionError(
            f"run {run_id} still {status} after {timeout_s:.0f} s:\n{self.run_messages(run_id)}"
        )

    def wait_for(
        self, what: str, found: Callable[[], Any], timeout_s: float = RUN_TIMEOUT_S
    ) -> Any:
        """Polls `found()` (bounded) until it returns something truthy, and returns that."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = found()
            if result:
                return result
            time.sleep(1.0)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")

    def launch_poll_run(self) -> str:
        """Submits poll_meters_job with an empty config (every enabled meter, now)."""
        return self.client.submit_job_execution(
            "poll_meters_job",
            repository_location_name=LOCATION,
            repository_name=REPOSITORY,
            run_config={},
        )

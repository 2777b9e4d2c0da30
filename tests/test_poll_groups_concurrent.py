"""Several poll groups polled at once by real runs on one machine: three groups, each with two
gateways of its own, two runs per group (a tick and the next one, as the schedule may have
them in flight), all six launched together through Dagster's own path (GraphQL launchRun on a
workspace whose code server loads energymon_pipeline.definitions; the DefaultRunLauncher starts
each run in its own process) on one SQLite instance with the link pools of
config/dagster.local.yaml.

Each gateway (tests/gateway_sim.py, one connection and one request at a time) records which
process opened each connection, found through /proc from the connection's port: every
connection to a group's gateway comes from a run of that group, so a group's runs touch only
their own links. Every reading is written exactly once: influxd holds, per meter and
measurement, one point per run of its group, each at a time of its own."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster_graphql.test.utils import execute_dagster_graphql
from gateway_sim import Gateway, word

from energymon_pipeline.registry import db, queries

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("g1", "g2", "g3")
UNITS = (1, 2, 3)
RUNS_PER_GROUP = 2
ADDRESSES = (0, 1, 40)
RUN_TIMEOUT_S = 150
PID = re.compile(r"Started process for run \(pid: (\d+)\)")
LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on Error { message }
  }
}
"""


def _socket_inode(port: int, server_port: int) -> str | None:
    """The inode of the client's end of a loopback TCP connection from `port` to `server_port`
    (/proc/net/tcp: local and remote address, inode in column 10; 0 when it has none)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(fields[i].split(":")[1], 16) for i in (1, 2))
        if (local, remote) == (port, server_port) and fields[9] != "0":
            return fields[9]
    return None


def _pid_of_socket(inode: str) -> int | None:
    target = f"socket:[{inode}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) == target:
                    return int(proc.name)
        except OSError:
            continue
    return None


class OwnedGateway(Gateway):
    """A gateway that also records the process behind each connection it accepted."""

    def start(self) -> OwnedGateway:
        self.peer_pids: list[int | None] = []
        return super().start()

    async def _handle(self, reader, writer) -> None:
        port = writer.get_extra_info("peername")[1]
        inode = _socket_inode(port, self.port)
        self.peer_pids.append(None if inode is None else _pid_of_socket(inode))
        await super()._handle(reader, writer)


@pytest.fixture
def gateways():
    started = {group: [OwnedGateway(units=set(UNITS), max_connections=1, delay_s=0.02).start()
                       for _ in range(2)] for group in GROUPS}  # fmt: skip
    yield started
    for pair in started.values():
        for gateway in pair:
            gateway.stop()


def build_registry(url: str, gateways: dict[str, list[Gateway]]) -> dict[int, str]:
    """Meters 1-18: three units behind each gateway, in the gateway's group; returns id -> group."""
    engine = db.create_engine(url)
    groups = {}
    try:
        db.upgrade(engine)
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE energy_meters SET enabled = false WHERE id = 0")
        queries.insert_registers(
            engine,
            [(i, {"type": "gw", "register_address": a, "measurement_name": f"v{a}",
                  "data_unit": "V", "data_type": 4, "function_code": 3, "word_order": 2,
                  "byte_order": 2}) for i, a in enumerate(ADDRESSES)],
        )  # fmt: skip
        meter_id = 0
        for group, pair in gateways.items():
            for gateway in pair:
                for unit in UNITS:
                    meter_id += 1
                    groups[meter_id] = group
                    queries.add_meter(engine, {"id": meter_id, "host": "127.0.0.1",
                                               "port": gateway.port, "slave_address": unit,
                                               "type": "gw", "poll_group": group,
                                               "timeout_s": 2})  # fmt: skip
    finally:
        engine.dispose()
    return groups


def dagster_home(tmp_path: Path) -> Path:
    """config/dagster.local.yaml (SQLite storage, the link pools) with runs launched at once:
    no daemon runs here to take them off a queue."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load((ROOT / "config/dagster.local.yaml").read_text())
    config["run_coordinator"] = {"module": "dagster._core.run_coordinator",
                                 "class": "DefaultRunCoordinator"}  # fmt: skip
    config.setdefault("storage", {"sqlite": {"base_dir": str(home)}})
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "energymon_pipeline.definitions", "working_directory": str(ROOT),
        "location_name": "energymon"}}]}))  # fmt: skip
    return home


def launch(process_context, group: str) -> str:
    params = {
        "selector": {"repositoryLocationName": "energymon", "repositoryName": "__repository__",
                     "pipelineName": "poll_meters_job"},
        "runConfigData": {"ops": {"load_definitions": {"config": {"group": group}}}},
        "mode": "default",
        "executionMetadata": {"tags": [{"key": "energymon/poll_group", "value": group}]},
    }  # fmt: skip
    result = execute_dagster_graphql(
        process_context.create_request_context(), LAUNCH_RUN, {"executionParams": params}
    )
    assert not result.errors, result.errors
    data = result.data["launchRun"]
    assert data["__typename"] == "LaunchRunSuccess", data
    return data["run"]["runId"]


def wait_for(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, dg.DagsterRun]:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        runs = {r.run_id: r for r in instance.get_runs(dg.RunsFilter(run_ids=run_ids))}
        if len(runs) == len(run_ids) and all(r.is_finished for r in runs.values()):
            return runs
        time.sleep(0.25)
    pytest.fail(f"runs not finished within {RUN_TIMEOUT_S} s")


def run_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event  # an engine event's message is on the event
        match = PID.search(entry.user_message or (event.message if event else "") or "")
        if match:
            return int(match.group(1))
    pytest.fail(f"run {run_id}: no process started")


def test_groups_polled_by_concurrent_runs_keep_their_links_and_write_once(
    tmp_path, gateways, influxd, influx_db, monkeypatch
):
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    groups = build_registry(url, gateways)
    home = dagster_home(tmp_path)
    env = {"DAGSTER_HOME": str(home), "ENERGYMON_DATABASE_URL": url,
           "ENERGYMON_POLL_GROUPS": ",".join(GROUPS), "ENERGYMON_SPOOL_DIR": str(tmp_path / "spool"),
           "ENERGYMON_DATA_DIR": str(tmp_path / "data"), "INFLUXDB_HOSTNAME": influxd.host,
           "INFLUXDB_PORT": str(influxd.port), "INFLUXDB_DB": influx_db, "TZ": "UTC"}  # fmt: skip
    for name, value in env.items():  # the code server, and so the runs, inherit them
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        target = WorkspaceFileTarget([str(tmp_path / "workspace.yaml")])
        with WorkspaceProcessContext(instance, target) as context:
            assert context.create_request_context().has_code_location("energymon")
            launched = {launch(context, g): g for g in GROUPS for _ in range(RUNS_PER_GROUP)}
            runs = wait_for(instance, list(launched))
            failed = [i for i, r in runs.items() if r.status != dg.DagsterRunStatus.SUCCESS]
            assert not failed, [m.user_message for i in failed for m in instance.all_logs(i)][-20:]
            group_of_pid = {run_pid(instance, run_id): g for run_id, g in launched.items()}
    assert len(group_of_pid) == len(launched), "each run in a process of its own"

    # Each group's runs touched only their own links: every connection to a gateway came
    # from a run of the gateway's group, one connection per run, one request at a time.
    for group, pair in gateways.items():
        for gateway in pair:
            assert gateway.refused == 0 and gateway.max_in_flight == 1
            assert len(gateway.peer_pids) == RUNS_PER_GROUP, gateway.peer_pids
            assert [group_of_pid.get(pid) for pid in gateway.peer_pids] == [group] * RUNS_PER_GROUP
            assert set(gateway.units_read()) == set(UNITS)

    # Every reading written exactly once: per meter and measurement one point per run of its
    # group, each at its own time, with the value its gateway holds.
    query = 'SELECT "value" FROM /^v\\d+$/ GROUP BY "id"'
    points = influxd.query(query, database=influx_db)
    assert points, "nothing written"
    per_series = Counter()
    per_time = Counter()
    for point in points:
        per_series[(point["id"], point["name"])] += 1
        per_time[(point["id"], point["name"], point["time"])] += 1
    assert set(per_time.values()) == {1}, "a reading written twice"
    assert per_series == {(str(m), f"v{a}"): RUNS_PER_GROUP for m in groups for a in ADDRESSES}
    unit = {m: UNITS[(m - 1) % len(UNITS)] for m in groups}
    assert all(p["value"] == word(unit[int(p["id"])], int(p["name"][1:]))
               for p in points)  # fmt: skip

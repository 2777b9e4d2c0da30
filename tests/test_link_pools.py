"""No two runs talk to one link at once, through Dagster's own concurrency pools: real poll
and connectivity-check runs, each in its own process, on one Dagster instance (a DAGSTER_HOME
with the project's config/dagster.local.yaml; storage on SQLite as in `make run`, or on
PostgreSQL through dagster-postgres as in production), started at the same moment against two
gateways on loopback that accept one connection, serve one request at a time and count
overlapping requests and refused connections (tests/gateway_sim.py).

A poll run of group g1, a manual run of some of g1's meters and a connectivity check on gateway A
take turns (A never sees two requests in flight nor a refused connection, the runs that waited
say so in their logs, and the pool table the UI lists shows them queued); the poll group on
gateway B runs alongside them. (Two groups never share a gateway: the registry refuses it.) The
control: the same runs on an instance without the pool limit overlap on A."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from gateway_sim import Gateway

from energymon_pipeline.ops.link_pools import pool_name
from energymon_pipeline.registry import db, queries

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 120

#: One run in a process of its own: waits for the go file, so all runs start together.
RUNNER = r"""
import json, pathlib, sys, time
import dagster as dg
from energymon_pipeline.definitions import build_definitions

job_name, run_config, go = sys.argv[1], json.loads(sys.argv[2]), pathlib.Path(sys.argv[3])
job = build_definitions().resolve_job_def(job_name)
pathlib.Path(sys.argv[4]).touch()
deadline = time.monotonic() + 60
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("no go file")
    time.sleep(0.005)
with dg.DagsterInstance.get() as instance:
    result = job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
print(json.dumps({"success": result.success, "run_id": result.run_id, "logs": logs}))
"""


@pytest.fixture
def gateways():
    started = [Gateway(units=set(range(1, 9)), max_connections=1, delay_s=0.25).start()
               for _ in range(2)]  # fmt: skip
    yield started
    for gateway in started:
        gateway.stop()


def registry(tmp_path: Path, gateway_a: Gateway, gateway_b: Gateway) -> str:
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    engine = db.create_engine(url)
    try:
        db.upgrade(engine)
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE energy_meters SET enabled = false WHERE id = 0")
        queries.insert_registers(
            engine,
            [(i, {"type": "gw", "register_address": a, "measurement_name": f"v{a}",
                  "data_unit": "V", "data_type": 4, "function_code": 3, "word_order": 2,
                  "byte_order": 2}) for i, a in enumerate((0, 1, 40))],
        )  # fmt: skip
        meters = [(1, gateway_a, 1, "g1"), (2, gateway_a, 2, "g1"), (3, gateway_a, 3, "g1"),
                  (4, gateway_a, 4, "g1"), (5, gateway_a, 5, "g1"), (6, gateway_a, 6, "g1"),
                  (7, gateway_b, 1, "g3"), (8, gateway_b, 2, "g3"), (9, gateway_b, 3, "g3")]  # fmt: skip
        for meter_id, gateway, unit, group in meters:
            queries.add_meter(engine, {"id": meter_id, "host": "127.0.0.1", "port": gateway.port,
                                       "slave_address": unit, "type": "gw", "poll_group": group,
                                       "timeout_s": 5})  # fmt: skip
    finally:
        engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def dagster_storage(request) -> str | None:
    """Dagster's storage: SQLite under DAGSTER_HOME (`make run`), or a fresh PostgreSQL
    database (production's dagster-postgres)."""
    if request.param == "sqlite":
        yield None
        return
    admin = request.getfixturevalue("postgres_admin")
    name = f"energymon_dagster_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def dagster_home(tmp_path: Path, pools: bool, storage_url: str | None = None) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load((ROOT / "config/dagster.local.yaml").read_text())
    if storage_url is not None:  # as dagster.yaml's, from a URL
        config["storage"] = {"postgres": {"postgres_url": storage_url}}
    if not pools:
        del config["concurrency"]["pools"]
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    # Create the instance's storage once, before several processes open it at the same time.
    with dg.DagsterInstance.from_config(str(home)):
        pass
    return home


class PoolWatch:
    """What the UI's pool page would show while the runs go: the most slots claimed and steps
    waiting at once, sampled from the instance's concurrency storage every 50 ms (the gateways share this
    process: a busier watch would starve them of the GIL on a loaded machine)."""

    def __init__(self, home: Path, pool: str) -> None:
        self.home, self.pool = home, pool
        self.max_claimed = self.max_waiting = 0
        self.waiting_runs: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            while not self._stop.is_set():
                info = instance.event_log_storage.get_concurrency_info(self.pool)
                waiting = [p for p in info.pending_steps if p.assigned_timestamp is None]
                self.max_claimed = max(self.max_claimed, len(info.claimed_slots))
                self.max_waiting = max(self.max_waiting, len(waiting))
                self.waiting_runs.update(p.run_id for p in waiting)
                self._stop.wait(0.05)

    def __enter__(self) -> PoolWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def run_together(tmp_path: Path, env: dict[str, str], runs: list[tuple[str, dict]]) -> list[dict]:
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(len(runs))]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RUNNER, job, json.dumps(config), str(go), str(ready[i])],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i, (job, config) in enumerate(runs)
    ]  # fmt: skip
    try:
        # Every process imports Dagster and builds the definitions first (bounded).
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(
            r.exists() or p.poll() is not None for r, p in zip(ready, processes, strict=True)
        ):
            time.sleep(0.05)
        go.touch()
        outputs = [p.communicate(timeout=RUN_TIMEOUT_S) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    results = []
    for (stdout, stderr), process in zip(outputs, processes, strict=True):
        assert process.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def poll(group: str) -> tuple[str, dict]:
    return "poll_meters_job", {"ops": {"load_definitions": {"config": {
        "group": group, "dry_run": True, "link_wait_s": 60}}}}  # fmt: skip


def manual(*meter_ids: int) -> tuple[str, dict]:
    """A run started by hand for some meters (no group), as from the launchpad."""
    return "poll_meters_job", {"ops": {"load_definitions": {"config": {
        "meter_ids": list(meter_ids), "dry_run": True, "link_wait_s": 60}}}}  # fmt: skip


def check(meter_id: int) -> tuple[str, dict]:
    return "connectivity_check_job", {"ops": {"check_meter_connectivity": {"config": {
        "meter_id": meter_id}}}}  # fmt: skip


def environment(tmp_path: Path, url: str, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ENERGYMON_DATABASE_URL": url,
        "ENERGYMON_SPOOL_DIR": str(tmp_path / "spool"),
        "INFLUXDB_HOSTNAME": "127.0.0.1",
        "INFLUXDB_PORT": "9",  # nothing listens: the connectivity point is spooled
    }


def test_runs_on_one_link_take_turns_and_other_links_run_alongside(
    tmp_path, gateways, dagster_storage
):
    a, b = gateways
    url = registry(tmp_path, a, b)
    home = dagster_home(tmp_path, pools=True, storage_url=dagster_storage)
    env = environment(tmp_path, url, home)
    pool = pool_name(f"tcp:127.0.0.1:{a.port}:socket")
    # The link's pool exists, as after a running system's first poll: several processes
    # creating one pool at the same moment is a race in Dagster's storage (each may add a
    # slot), not what this test is about.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
    with PoolWatch(home, pool) as watch:
        g1, by_hand, check_3, g3 = run_together(
            tmp_path, env, [poll("g1"), manual(4, 5, 6), check(3), poll("g3")]
        )

    for result in (g1, by_hand, check_3, g3):
        assert result["success"], "\n".join(m for m in result["logs"] if m)
    # Gateway A: the three runs took turns on its one connection, one request at a time.
    assert a.refused == 0
    assert a.max_in_flight == 1
    assert a.max_open_connections == 1
    assert a.units_read() == {1: 2, 2: 2, 3: 3, 4: 4, 5: 4, 6: 4}  # 3: + check, 4-6: + by hand
    # The runs that waited said so, naming the link's pool (g1's poll of A takes 3 s on the
    # bus, the run by hand 1.5 s, so the three runs started together cannot all have found it
    # free).
    waited = [
        r for r in (g1, by_hand, check_3) if any(f"waiting for pool {pool}" in m for m in r["logs"])
    ]
    assert len(waited) >= 1
    # And in the instance's pool table the UI shows: one holder, the others queued.
    assert watch.max_claimed == 1
    assert watch.max_waiting >= 1
    assert watch.waiting_runs <= {g1["run_id"], by_hand["run_id"], check_3["run_id"]}
    # Gateway B's group did not wait for A: its requests overlap A's in time.
    assert b.refused == 0 and b.units_read() == {1: 2, 2: 2, 3: 2}
    assert not any("waiting for pool" in m for m in g3["logs"])
    assert min(b.request_times) < max(a.request_times)
    assert max(b.request_times) < max(a.request_times)
    # Nothing is held after the runs; the pool has the instance's default limit.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        info = instance.event_log_storage.get_concurrency_info(pool)
    assert info.claimed_slots == [] and info.limit == 1


def test_without_the_pool_limit_runs_overlap_on_the_gateway(tmp_path, gateways):
    a, b = gateways
    url = registry(tmp_path, a, b)
    env = environment(tmp_path, url, dagster_home(tmp_path, pools=False))
    results = run_together(tmp_path, env, [poll("g1"), manual(4, 5, 6)])
    assert any("links are not guarded across runs" in m for r in results for m in r["logs"])
    # The control for the test above: unguarded runs collide on the one-connection gateway.
    assert a.refused > 0 or a.max_in_flight > 1

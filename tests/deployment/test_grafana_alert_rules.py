"""The provisioned Grafana alert rules (config/grafana/alerting) fit Grafana's provisioning
format and the stack, and their queries, run against a real influxd after real poll runs,
fire for what they are meant to and stay quiet otherwise.

Grafana evaluates a rule by running its InfluxQL query over the rule's relative time range
($timeFilter as an absolute millisecond range), reducing each series (`last`, dropping
nulls) and comparing the result with the threshold; that is done here the same way, so a
query that returns nothing, or the wrong series, fails. The data comes from poll_meters_job
against the virtual server: one meter that answers, one whose port refuses connections."""

from __future__ import annotations

import re
import socket
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from deployment_files import GRAFANA, load_yaml

from energymon_pipeline.definitions import build_definitions
from energymon_pipeline.influx.points import spool_health_line
from energymon_pipeline.modbus.decode import encode_value
from energymon_pipeline.modbus.types import DataType
from energymon_pipeline.registry import db, queries
from virtual_server import DeviceMemory, DeviceMemoryServer

RULES_FILE = GRAFANA / "alerting" / "alert-rules.yml"
LIVE, DEAD = "live meter", "dead, meter"


def rules() -> dict[str, dict]:
    document = load_yaml(RULES_FILE)
    return {rule["uid"]: rule for group in document["groups"] for rule in group["rules"]}


def test_rules_are_grafana_provisioning():
    document = load_yaml(RULES_FILE)
    assert document["apiVersion"] == 1
    [group] = document["groups"]
    assert group["folder"] == "energymon" and group["interval"] == "1m"
    datasources = {s["uid"] for s in load_yaml(GRAFANA / "datasources" / "datasource.yml")[
        "datasources"]}  # fmt: skip
    assert set(rules()) == {"energymon-meter-stopped-reporting", "energymon-spool-backlog"}
    for uid, rule in rules().items():
        refs = {query["refId"]: query for query in rule["data"]}
        assert rule["condition"] in refs, uid
        for ref, query in refs.items():
            assert query["model"]["refId"] == ref
            if query["datasourceUid"] == "__expr__":
                assert query["model"]["expression"] in refs
            else:
                assert query["datasourceUid"] in datasources, uid
                assert query["relativeTimeRange"]["from"] > query["relativeTimeRange"]["to"]
        assert rule["noDataState"] in ("OK", "NoData", "Alerting")
        assert rule["execErrState"] in ("Error", "Alerting", "OK")
        assert re.fullmatch(r"\d+m", rule["for"]) and rule["annotations"]["summary"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def polled(influxd, tmp_path_factory):
    """Two poll runs into a fresh database: meter 1 answers, meter 2 refuses."""
    root = tmp_path_factory.mktemp("alert-rules")
    database = f"energymon_alert_rules_{int(time.time() * 1000)}"
    memory = DeviceMemory()
    memory.set_registers(4, 0, encode_value(230.5, DataType.FLOAT32))
    server = DeviceMemoryServer({1: memory}, host="127.0.0.1", port=0).start_in_thread()
    url = f"sqlite:///{root / 'registry.sqlite'}"
    engine = db.create_engine(url)
    db.upgrade(engine)
    queries.set_meter_enabled(engine, 0, False)
    queries.insert_registers(engine, [(0, {"type": "t", "register_address": 0,
        "measurement_name": "voltage", "data_unit": "V", "data_type": 3, "function_code": 4,
        "word_order": 2, "byte_order": 2})])  # fmt: skip
    for meter_id, port, description in ((1, server.port, LIVE), (2, _free_port(), DEAD)):
        queries.add_meter(engine, {"id": meter_id, "host": "127.0.0.1", "port": port,
                                   "slave_address": 1, "type": "t", "description": description})  # fmt: skip
    engine.dispose()
    env = {
        "ENERGYMON_DATABASE_URL": url,
        "INFLUXDB_HOSTNAME": influxd.host,
        "INFLUXDB_PORT": str(influxd.port),
        "INFLUXDB_DB": database,
        "ENERGYMON_SPOOL_DIR": str(root / "spool"),
    }
    patch = pytest.MonkeyPatch()
    patch.setenv("ENERGYMON_DATABASE_URL", url)
    try:
        job = build_definitions(env).resolve_job_def("poll_meters_job")
        with dg.instance_for_test() as instance:
            runs = [job.execute_in_process(instance=instance, raise_on_error=False)
                    for _ in range(2)]  # fmt: skip
        assert all(r.success for r in runs)
        yield {"server": influxd, "database": database}
    finally:
        patch.undo()
        server.stop_thread()
        client = influxd.client()
        client.drop_database(database)
        client.close()


def evaluate(polled, rule: dict, now: int | None = None) -> dict[tuple, float]:
    """Grafana's evaluation of `rule` at `now` (ms; default: now): {series tags: reduced
    value} of the firing series."""
    [query] = [q for q in rule["data"] if q["datasourceUid"] != "__expr__"]
    now = now or int(time.time() * 1000)
    window = query["relativeTimeRange"]
    time_filter = (
        f"time >= {now - 1000 * window['from']}ms and time <= {now - 1000 * window['to']}ms"
    )
    q = query["model"]["query"].replace("$timeFilter", time_filter)
    client = polled["server"].client(polled["database"])
    try:
        series = client.query(q, database=polled["database"], epoch="ms").raw.get("series", [])
    finally:
        client.close()
    assert series, f"{rule['title']}: {q} returned no series"
    reduced = {}
    for s in series:
        values = [row[1] for row in s["values"] if row[1] is not None]
        if values:
            reduced[tuple(sorted((s.get("tags") or {}).items()))] = values[-1]
    [threshold] = [q for q in rule["data"] if q["model"].get("type") == "threshold"]
    evaluator = threshold["model"]["conditions"][0]["evaluator"]
    limit = evaluator["params"][0]
    compare = {"lt": lambda v: v < limit, "gt": lambda v: v > limit}[evaluator["type"]]
    return {tags: value for tags, value in reduced.items() if compare(value)}


def test_meter_stopped_reporting_fires_for_the_dead_meter_only(polled):
    firing = evaluate(polled, rules()["energymon-meter-stopped-reporting"])
    assert firing == {(("description", DEAD), ("id", "2")): 0}


def test_spool_backlog_is_quiet_while_influxdb_takes_writes(polled):
    assert evaluate(polled, rules()["energymon-spool-backlog"]) == {}


def test_spool_backlog_fires_when_batches_wait(polled):
    """Spool points as the write path writes them after InfluxDB was away (the backlog it
    had after each run, sent once InfluxDB answered again), after the polls' own points."""
    [last] = polled["server"].query(
        'SELECT last("batches") FROM "energymon_spool"', database=polled["database"]
    )
    after = datetime.fromtimestamp(last["time"] / 1000, UTC)
    client = polled["server"].client()
    try:
        lines = [spool_health_line(time=after + timedelta(milliseconds=s), batches=b,
                                   points=10 * b, bytes_=100 * b)
                 for s, b in ((1, 2), (2, 3))]  # fmt: skip
        client.write_points(lines, database=polled["database"], protocol="line",
                            time_precision="ms")  # fmt: skip
    finally:
        client.close()
    now = max(int(time.time() * 1000), last["time"] + 3)
    assert evaluate(polled, rules()["energymon-spool-backlog"], now) == {(): 3}

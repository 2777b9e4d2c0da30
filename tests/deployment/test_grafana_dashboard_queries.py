"""Every InfluxQL query of every provisioned Grafana dashboard runs against a real influxd after
a real poll of the simulated meters, and returns series: a panel that would stay empty fails.

The stack is set up as docker-compose.yml sets it up: InfluxDB with auth on, the database and
its users created as the influxdb image's first start creates them, then our init scripts
(config/influxdb/initdb.d); the pipeline writes as the writer, the dashboards are queried as
Grafana's reader. The data comes from the real jobs: poll_meters_job (twice) against the
virtual server's `test` and `sdm630` devices and a meter that refuses connections,
connectivity_check_job, and the rollup jobs. The rollups need completed partitions (hours and
days that have ended), so the real poll's raw readings are copied one day back first, and
energy_rollup_job / energy_rollup_daily_job run over those partitions.

Grafana's macros are substituted as Grafana does: $timeFilter as an absolute millisecond
range, $__interval, and the template variables with Grafana's InfluxQL formatting (values of
a multi-value variable regex-escaped; "All" as its allValue)."""

from __future__ import annotations

import re
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from deployment_files import load_dashboards
from influx_init import image_first_start, run_init_scripts

from energymon_pipeline.definitions import build_definitions
from energymon_pipeline.registry import db, queries
from energymon_pipeline.registry.profiles import import_profile
from virtual_server import VirtualModbusTCPServer
from virtual_server.devices.random_test import RandomTestDevice
from virtual_server.devices.sdm630 import Sdm630

SDM630_METER = "Hall A (main)"  # regex metacharacters, as Grafana must escape them
DEAD_METER = "dead, meter"
DAY_MS = 86_400_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(job, instance, **kwargs) -> dg.ExecuteInProcessResult:
    return job.execute_in_process(instance=instance, raise_on_error=False, **kwargs)


def copy_readings_one_day_back(admin, database: str) -> list[int]:
    """Copies the raw readings (measurements with a `value` field) 24 h back; returns the
    copies' timestamps (ms)."""
    result = admin.query('SELECT "value" FROM /.*/ GROUP BY *', database=database, epoch="ms")
    points, stamps = [], []
    for series in result.raw.get("series", []):
        if series["name"].startswith("energymon_"):
            continue
        for stamp, value in series["values"]:
            if value is None:
                continue
            points.append({"measurement": series["name"], "tags": series.get("tags") or {},
                           "time": stamp - DAY_MS, "fields": {"value": float(value)}})  # fmt: skip
            stamps.append(stamp - DAY_MS)
    admin.write_points(points, time_precision="ms", database=database)
    return stamps


@pytest.fixture(scope="module")
def stack(influxd_auth, tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboards")
    suffix = uuid.uuid4().hex[:10]
    database = f"energymon_dashboards_{suffix}"
    users = {"write": (f"energymon_{suffix}", "writer-secret"),
             "read": (f"grafana_{suffix}", "reader-secret")}  # fmt: skip
    admin = influxd_auth.client()
    image_first_start(admin, database, users)
    run_init_scripts(
        admin, {"INFLUXDB_DB": database, "INFLUXDB_WRITE_USER": users["write"][0]}, root
    )

    modbus = VirtualModbusTCPServer({0: RandomTestDevice(seed=3), 1: Sdm630(seed=4)})
    modbus.start_in_thread()
    url = f"sqlite:///{root / 'registry.sqlite'}"
    engine = db.create_engine(url)
    db.upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"UPDATE energy_meters SET host = '127.0.0.1', port = {modbus.port} WHERE id = 0"
        )
    import_profile(engine, "sdm630")
    queries.add_meter(engine, {"id": 1, "host": "127.0.0.1", "port": modbus.port,
                               "slave_address": 1, "type": "sdm630", "description": SDM630_METER})  # fmt: skip
    queries.add_meter(engine, {"id": 2, "host": "127.0.0.1", "port": _free_port(),
                               "slave_address": 1, "type": "sdm630", "description": DEAD_METER})  # fmt: skip
    engine.dispose()

    env = {
        "ENERGYMON_DATABASE_URL": url,
        "INFLUXDB_HOSTNAME": influxd_auth.host,
        "INFLUXDB_PORT": str(influxd_auth.port),
        "INFLUXDB_DB": database,
        "INFLUXDB_HTTP_AUTH_ENABLED": "true",
        "INFLUXDB_WRITE_USER": users["write"][0],
        "INFLUXDB_WRITE_USER_PASSWORD": users["write"][1],
        "ENERGYMON_SPOOL_DIR": str(root / "spool"),
        "TZ": "UTC",
        "ENERGYMON_ROLLUP_START": (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%d"),
    }
    patch = pytest.MonkeyPatch()  # the password reaches the resource as dg.EnvVar
    patch.setenv("INFLUXDB_WRITE_USER_PASSWORD", users["write"][1])
    patch.setenv("ENERGYMON_DATABASE_URL", env["ENERGYMON_DATABASE_URL"])
    try:
        defs = build_definitions(env)
        with dg.instance_for_test() as instance:
            poll = defs.resolve_job_def("poll_meters_job")
            polls = [run(poll, instance) for _ in range(2)]
            check = defs.resolve_job_def("connectivity_check_job")
            checks = {
                meter: run(check, instance, run_config={"ops": {"check_meter_connectivity": {
                    "config": {"meter_id": meter}}}})
                for meter in (1, 2)
            }  # fmt: skip
            stamps = copy_readings_one_day_back(admin, database)
            hours = sorted({datetime.fromtimestamp(s / 1000, UTC).strftime("%Y-%m-%d-%H:00")
                            for s in stamps})  # fmt: skip
            days = sorted({hour[:10] for hour in hours})
            hourly = defs.resolve_job_def("energy_rollup_job")
            daily = defs.resolve_job_def("energy_rollup_daily_job")
            rollups = [run(hourly, instance, partition_key=hour) for hour in hours]
            rollups += [run(daily, instance, partition_key=day) for day in days]
        yield {
            "database": database,
            "server": influxd_auth,
            "users": users,
            "polls": polls,
            "checks": checks,
            "rollups": rollups,
        }
    finally:
        patch.undo()
        modbus.stop_thread()
        admin.drop_database(database)
        for name, _ in users.values():
            admin.drop_user(name)
        admin.close()


def reader_query(stack, q: str) -> list[dict]:
    """Runs `q` as Grafana's reader; returns the series (name, tags, columns, values)."""
    name, password = stack["users"]["read"]
    client = stack["server"].client(stack["database"], username=name, password=password)
    try:
        return client.query(q, database=stack["database"], epoch="ms").raw.get("series", [])
    finally:
        client.close()


# -- Grafana's interpolation ------------------------------------------------------------------

_REGEX_SPECIAL = re.compile(r"[-/\\^$*+?.()|[\]{}]")


def grafana_regex_escape(value: str) -> str:
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value)


def format_value(variable: dict, values: list[str]) -> str:
    """Grafana's InfluxQL formatting of a variable's selected values."""
    if not variable.get("multi") and not variable.get("includeAll"):
        return values[0]
    escaped = [grafana_regex_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def render(query: str, variables: dict[str, str]) -> str:
    now = int(time.time() * 1000)
    macros = {
        "timeFilter": f"time >= {now - 30 * DAY_MS}ms and time <= {now + 60_000}ms",
        "__interval_ms": "60000",
        "__interval": "1m",
        "__from": str(now - 30 * DAY_MS),
        "__to": str(now + 60_000),
        **variables,
    }
    for name in sorted(macros, key=len, reverse=True):  # $__interval_ms before $__interval
        for form in (f"${{{name}}}", f"[[{name}]]", f"${name}"):
            query = query.replace(form, macros[name])
    leftover = re.search(r"\$\{?\w+|\[\[\w+\]\]", query)
    assert leftover is None, f"unknown macro {leftover.group(0)} in {query}"
    return query


def variable_values(stack, dashboard: dict, chosen: dict[str, str]) -> dict[str, list[str]]:
    """Each template variable's options, evaluated in order (a query may use the earlier ones)."""
    options: dict[str, list[str]] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "custom":
            options[variable["name"]] = [o["value"] for o in variable["options"]]
        else:
            assert variable["type"] == "query", variable["name"]
            q = render(variable["query"], chosen)
            series = reader_query(stack, q)
            options[variable["name"]] = sorted({row[-1] for s in series for row in s["values"]})
            assert options[variable["name"]], f"variable {variable['name']}: {q} found nothing"
        chosen[variable["name"]] = current_value(variable, options[variable["name"]])
    return options


def current_value(variable: dict, options: list[str]) -> str:
    current = variable.get("current", {}).get("value")
    if current in (["$__all"], "$__all"):
        return variable["allValue"] if variable.get("allValue") else format_value(variable, options)
    current = current[0] if isinstance(current, list) else current
    assert current in options, f"variable {variable['name']}: default {current!r} not offered"
    return format_value(variable, [current])


def selections(stack, dashboard: dict) -> list[dict[str, str]]:
    """The defaults (meter: All) and, where a meter variable exists, the SDM630 meter alone."""
    chosen: dict[str, str] = {}
    options = variable_values(stack, dashboard, chosen)
    result = [chosen]
    if "meter" in options:
        assert SDM630_METER in options["meter"], options["meter"]
        meter = next(v for v in dashboard["templating"]["list"] if v["name"] == "meter")
        result.append({**chosen, "meter": format_value(meter, [SDM630_METER])})
    return result


DASHBOARDS = load_dashboards()


def test_the_jobs_that_feed_the_dashboards_ran(stack):
    assert all(r.success for r in stack["polls"])  # meter 2 failed, the others were read
    assert stack["checks"][1].success and not stack["checks"][2].success
    assert stack["rollups"] and all(r.success for r in stack["rollups"])


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_query_returns_series(stack, name):
    dashboard = DASHBOARDS[name]
    for variables in selections(stack, dashboard):
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                q = render(target["query"], variables)
                series = reader_query(stack, q)
                values = [v for s in series for row in s["values"] for v in row[1:]]
                assert any(v is not None for v in values), (
                    f"{name}: panel {panel['title']!r} ({target['refId']}) returns nothing "
                    f"with {variables}: {q}"
                )


def test_energy_per_day_reads_the_rollups(stack):
    rows = reader_query(
        stack,
        'SELECT "consumption", "count" FROM "energymon_rollup_1d" WHERE '
        f"\"description\" = '{SDM630_METER}' AND \"measurement\" = 'importActiveEnergy'",
    )
    counts = [row[2] for series in rows for row in series["values"]]
    consumptions = [row[1] for series in rows for row in series["values"]]
    # The two polls' readings of the counter (one day, or two when they straddled midnight).
    assert sum(counts) == 2 and all(c is not None and c >= 0 for c in consumptions)

"""The rollup assets through their jobs (energy_rollup_job, energy_rollup_daily_job) on synthetic
raw points in the real influxd and a real registry: a counter with a reset, a gauge, a gap;
every rollup value asserted; re-runs idempotent; each partition's check passes when every
enabled meter has its rollup and names the meter that has none."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from energymon_pipeline.definitions import build_definitions
from energymon_pipeline.influx.rollup import consumption
from energymon_pipeline.influx.writer import InfluxWriter
from energymon_pipeline.registry import db, queries


def ms(hour: int, minute: int) -> int:
    return int(datetime(2026, 11, 20, hour, minute, tzinfo=UTC).timestamp() * 1000)


ENERGY = [
    (9, 50, 100.0),
    (10, 0, 101.0),
    (10, 20, 103.0),
    (10, 40, 104.0),  # hour 10: +4
    (11, 10, 106.0),
    (11, 30, 2.0),
    (11, 50, 5.0),  # 11: +2, reset, +3
    (12, 45, 9.0),
]  # 12: gap, +4
VOLTAGE = [(10, 5, 230.0), (10, 35, 232.0), (11, 15, 228.0)]  # nothing at 12
TAGS = "description=hall\\ A,id=7,type=meter"


@pytest.fixture
def rollup_env(influxd, influx_db, tmp_path):
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    engine = db.create_engine(url)
    db.upgrade(engine)
    queries.insert_registers(engine, [
        (1, {"type": "meter", "register_address": 0, "measurement_name": "energy", "data_unit": "kWh",
             "data_type": 3, "function_code": 4, "word_order": 2, "byte_order": 2, "cumulative": "1"}),
        (2, {"type": "meter", "register_address": 2, "measurement_name": "voltage", "data_unit": "V",
             "data_type": 3, "function_code": 4, "word_order": 2, "byte_order": 2}),
    ])  # fmt: skip
    queries.add_meter(engine, {"id": 7, "host": "127.0.0.1", "port": 502, "slave_address": 1,
                               "type": "meter", "description": "hall A"})  # fmt: skip
    queries.set_meter_enabled(engine, 0, False)  # the seeded virtual meter: no readings here
    engine.dispose()
    lines = [f"energy,{TAGS},dataunit=kWh value={v} {ms(h, m)}" for h, m, v in ENERGY]
    lines += [f"voltage,{TAGS},dataunit=V value={v} {ms(h, m)}" for h, m, v in VOLTAGE]
    lines += [f"energymon_poll,id=7 ok=true,values=2i {ms(10, 1)}"]  # health: not rolled up
    with InfluxWriter(influxd.target(influx_db)) as writer:
        writer.write(lines)
    return {
        "ENERGYMON_DATABASE_URL": url,
        "INFLUXDB_HOSTNAME": influxd.host,
        "INFLUXDB_PORT": str(influxd.port),
        "INFLUXDB_DB": influx_db,
        "ENERGYMON_SPOOL_DIR": str(tmp_path / "spool"),
        "ENERGYMON_ROLLUP_START": "2026-11-01",
    }


def run(env, job_name: str, partition: str) -> dg.ExecuteInProcessResult:
    job = build_definitions(env).resolve_job_def(job_name)
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        # The registry URL reaches the resource as dg.EnvVar, read from the process.
        patch.setenv("ENERGYMON_DATABASE_URL", env["ENERGYMON_DATABASE_URL"])
        return job.execute_in_process(instance=instance, partition_key=partition)


def materialized(result: dg.ExecuteInProcessResult) -> dict:
    """The metadata of the run's one materialization (its partition's rollup)."""
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def check_of(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == "every_enabled_meter_rolled_up"
    return evaluation


def rollups(influxd, database, measurement="energymon_rollup_1h") -> dict:
    rows = influxd.query(
        f'SELECT * FROM "{measurement}" GROUP BY "measurement", "id", "description", "dataunit"',
        database=database,
    )
    return {(r["measurement"], r["time"]): r for r in rows}


def test_consumption_of_a_counter():
    assert consumption([100, 101, 103]) == (3.0, 0)
    assert consumption([104, 106, 2, 5]) == (5.0, 1)
    assert consumption([5]) == (0.0, 0)
    assert consumption([float("nan"), 1, 2]) == (1.0, 0)


def test_three_hours_then_the_day(rollup_env, influxd):
    db_name = rollup_env["INFLUXDB_DB"]
    results = [run(rollup_env, "energy_rollup_job", f"2026-11-20-{h:02d}:00") for h in (10, 11, 12)]
    assert all(r.success for r in results)
    assert [materialized(r)["series rolled up"] for r in results] == [2, 2, 1]
    checks = [check_of(r) for r in results]
    assert [(c.asset_key.to_user_string(), c.partition, c.passed) for c in checks] == [
        ("energymon_rollup_1h", f"2026-11-20-{h:02d}:00", True) for h in (10, 11, 12)
    ]
    assert checks[0].description == "all 1 enabled meter(s) rolled up"
    points = rollups(influxd, db_name)
    assert len(points) == 5
    e10, e11, e12 = (points[("energy", ms(h, 0))] for h in (10, 11, 12))
    assert (e10["id"], e10["description"], e10["dataunit"]) == ("7", "hall A", "kWh")
    assert (e10["count"], e10["min"], e10["max"], e10["last"], e10["consumption"]) == (
        3,
        101,
        104,
        104,
        4,
    )
    assert e10["mean"] == pytest.approx((101 + 103 + 104) / 3)
    assert (e11["count"], e11["min"], e11["max"], e11["last"], e11["consumption"]) == (
        3,
        2,
        106,
        5,
        5,
    )
    assert (e12["count"], e12["last"], e12["consumption"]) == (1, 9, 4)
    v10, v11 = points[("voltage", ms(10, 0))], points[("voltage", ms(11, 0))]
    assert (v10["count"], v10["mean"], v10["min"], v10["max"], v10["last"]) == (
        2,
        231,
        230,
        232,
        232,
    )
    assert v10["consumption"] is None, "a gauge has no consumption"
    assert (v11["count"], v11["mean"]) == (1, 228)
    assert ("voltage", ms(12, 0)) not in points, "a gap is not invented over"
    metadata = materialized(results[1])
    assert metadata["counters with resets"] == 1
    assert metadata["points read"] == 4
    assert metadata["window"] == "2026-11-20T11:00:00+00:00 - 2026-11-20T12:00:00+00:00"

    day = run(rollup_env, "energy_rollup_daily_job", "2026-11-20")
    assert day.success
    assert materialized(day)["series rolled up"] == 2
    assert (check_of(day).asset_key.to_user_string(), check_of(day).passed) == (
        "energymon_rollup_1d",
        True,
    )
    daily = rollups(influxd, db_name, "energymon_rollup_1d")
    midnight = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)
    energy, voltage = daily[("energy", midnight)], daily[("voltage", midnight)]
    assert (
        energy["count"],
        energy["min"],
        energy["max"],
        energy["last"],
        energy["consumption"],
    ) == (7, 2, 106, 9, 13)
    assert energy["mean"] == pytest.approx((101 + 103 + 104 + 106 + 2 + 5 + 9) / 7)
    assert (voltage["count"], voltage["mean"], voltage["last"]) == (3, pytest.approx(230), 228)


def test_rerunning_a_partition_writes_the_same_points_once(rollup_env, influxd):
    for _ in range(3):
        assert run(rollup_env, "energy_rollup_job", "2026-11-20-11:00").success
    rows = influxd.query('SELECT * FROM "energymon_rollup_1h" GROUP BY "measurement"',
                         database=rollup_env["INFLUXDB_DB"])  # fmt: skip
    assert sorted((r["measurement"], r["time"]) for r in rows) == [
        ("energy", ms(11, 0)), ("voltage", ms(11, 0))
    ]  # fmt: skip


def test_an_hour_without_data_writes_nothing(rollup_env, influxd):
    result = run(rollup_env, "energy_rollup_job", "2026-11-20-03:00")
    assert result.success, "no readings is not an error of the run"
    assert materialized(result)["series rolled up"] == 0
    assert (
        influxd.query('SELECT * FROM "energymon_rollup_1h"', database=rollup_env["INFLUXDB_DB"])
        == []
    )
    check = check_of(result)
    assert (check.passed, check.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert check.description == "no readings in 2026-11-20-03:00: meter 7 (hall A)"


def test_the_check_names_the_enabled_meter_without_readings(rollup_env, influxd):
    engine = db.create_engine(rollup_env["ENERGYMON_DATABASE_URL"])
    queries.add_meter(engine, {"id": 8, "host": "127.0.0.1", "port": 502, "slave_address": 2,
                               "type": "meter", "description": "hall B"})  # fmt: skip
    queries.add_meter(engine, {"id": 9, "host": "127.0.0.1", "port": 502, "slave_address": 3,
                               "type": "meter"})  # fmt: skip
    queries.set_meter_enabled(engine, 9, False)
    engine.dispose()
    hour = run(rollup_env, "energy_rollup_job", "2026-11-20-10:00")
    assert hour.success, "a meter without readings fails the check, not the run"
    check = check_of(hour)
    assert (check.passed, check.partition) == (False, "2026-11-20-10:00")
    assert check.description == "no readings in 2026-11-20-10:00: meter 8 (hall B)"
    metadata = {k: v.value for k, v in check.metadata.items()}
    assert metadata == {
        "enabled meters": 2,
        "meters rolled up": 1,
        "meters without rollup": "meter 8 (hall B)",
        "meter ids without rollup": [8],
    }, "the disabled meter 9 is not expected to have a rollup"

    day = check_of(run(rollup_env, "energy_rollup_daily_job", "2026-11-20"))
    assert (day.passed, day.partition) == (False, "2026-11-20")
    assert day.description == "no hourly rollups in 2026-11-20: meter 8 (hall B)"

"""poll_meters_job with execute_in_process, against a real Modbus server, the real registry
(SQLite and PostgreSQL) and a real influxd: what lands in InfluxDB is exactly what the server
served, with the original point shape; nothing is lost while InfluxDB is down."""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime

import dagster as dg
import pytest
import sqlalchemy as sa

from energymon_pipeline.definitions import build_definitions
from energymon_pipeline.errors import RegistryError
from energymon_pipeline.influx.spool import Spool
from energymon_pipeline.modbus.decode import encode_value
from energymon_pipeline.modbus.types import DataType
from energymon_pipeline.registry import db, queries
from virtual_server import DeviceMemory

SDM630_ADDRESSES = [*range(0, 35, 2), 52, 56, 60, 62, 70, 72, 74, 76, 78]


@pytest.fixture
def stack(registry_url, modbus_server, influxd, influx_db, tmp_path):
    """A migrated registry whose virtual meter (id 0) points at the test server, plus an
    sdm630 meter (id 1, unit 1), and definitions wired to the test influxd."""
    engine = db.create_engine(registry_url)
    db.upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"UPDATE energy_meters SET host = '127.0.0.1', port = {modbus_server.port} WHERE id = 0"
        )
    queries.insert_registers(
        engine,
        [(i, {"type": "sdm630", "register_address": a, "measurement_name": f"value{a}",
              "data_unit": "V", "data_type": 3, "function_code": 4, "word_order": 2,
              "byte_order": 2}) for i, a in enumerate(SDM630_ADDRESSES)],
    )  # fmt: skip
    queries.add_meter(engine, {"id": 1, "host": "127.0.0.1", "port": modbus_server.port,
                               "slave_address": 1, "type": "sdm630", "description": "main, hall A"})  # fmt: skip
    modbus_server.devices[0] = DeviceMemory(holding_registers={0: 0xFF85})  # INT16 -123
    sdm = DeviceMemory()
    sdm.set_registers(4, 0, [0] * 80)
    for a in SDM630_ADDRESSES:
        sdm.set_registers(4, a, encode_value(a + 0.25, DataType.FLOAT32))
    modbus_server.devices[1] = sdm
    env = {
        "ENERGYMON_DATABASE_URL": registry_url,
        "INFLUXDB_HOSTNAME": influxd.host,
        "INFLUXDB_PORT": str(influxd.port),
        "INFLUXDB_DB": influx_db,
        "ENERGYMON_SPOOL_DIR": str(tmp_path / "spool"),
    }
    yield {"engine": engine, "env": env, "server": modbus_server, "influxd": influxd,
           "db": influx_db, "sdm": sdm}  # fmt: skip
    engine.dispose()


def run_poll(stack, logs: list | None = None, **config) -> dg.ExecuteInProcessResult:
    """One poll run; with `logs`, the run's event log entries are added to it."""
    job = build_definitions(stack["env"]).resolve_job_def("poll_meters_job")
    run_config = {"ops": {"load_definitions": {"config": config}}} if config else None
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        # The registry URL reaches the resource as dg.EnvVar, read from the process.
        patch.setenv("ENERGYMON_DATABASE_URL", stack["env"]["ENERGYMON_DATABASE_URL"])
        result = job.execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False
        )
        if logs is not None:
            logs.extend(instance.all_logs(result.run_id))
        return result


def output_metadata(result: dg.ExecuteInProcessResult, step: str) -> dict:
    metadata = {}
    for event in result.all_node_events:
        if event.step_key == step and event.event_type_value == "STEP_OUTPUT":
            metadata.update(event.event_specific_data.metadata)
    return metadata


def query(stack, q: str) -> list[dict]:
    return stack["influxd"].query(q, database=stack["db"])


def test_readings_land_in_influxdb_with_the_original_point_shape(stack):
    before = time.time() * 1000
    result = run_poll(stack)
    after = time.time() * 1000
    assert result.success
    [point] = query(stack, 'SELECT * FROM "test_measurement"')
    assert point["value"] == -123.0
    assert (point["id"], point["description"], point["dataunit"], point["type"]) == (
        "0", "test_energy_meter", "test_u", "virtual_modbustcp"
    )  # fmt: skip
    assert before - 1 <= point["time"] <= after
    rows = query(stack, 'SELECT "value" FROM /^value/ WHERE "description" = \'main, hall A\'')
    assert sorted((r["name"], r["value"]) for r in rows) == sorted(
        (f"value{a}", a + 0.25) for a in SDM630_ADDRESSES
    )
    # The dashboards' own queries work on it.
    [last] = query(
        stack, 'SELECT last("value") FROM "value52" WHERE "description" = \'main, hall A\''
    )
    assert last["last"] == 52.25
    health = query(stack, 'SELECT * FROM "energymon_poll" GROUP BY "id"')
    assert {(h["id"], h["ok"], h["values"], h["requests"]) for h in health} == {
        ("0", True, 1, 1), ("1", True, 27, 2)
    }  # fmt: skip
    table = output_metadata(result, "write_readings")["meters"]
    assert [(r.data["meter"], r.data["ok"], r.data["values"]) for r in table.records] == [
        (0, True, 1), (1, True, 27)
    ]  # fmt: skip


def test_one_dead_meter_among_live_ones(stack, refused_port):
    queries.add_meter(stack["engine"], {"id": 2, "host": "127.0.0.1", "port": refused_port,
                                        "slave_address": 1, "type": "sdm630"})  # fmt: skip
    result = run_poll(stack)
    assert result.success
    table = {
        r.data["meter"]: r.data for r in output_metadata(result, "write_readings")["meters"].records
    }
    assert table[2]["ok"] is False
    assert (
        table[2]["error"]
        == f"FC4 0-35 (value0, value2, value4 +15): connection refused: 127.0.0.1:{refused_port}"
    )
    assert table[0]["ok"] and table[1]["ok"]
    assert len(query(stack, 'SELECT * FROM "value0"')) == 1
    [dead] = query(stack, 'SELECT * FROM "energymon_poll" WHERE "id" = \'2\'')
    assert dead["ok"] is False and dead["errors"] == 1


def test_every_meter_failed_fails_the_run(stack, refused_port):
    with stack["engine"].begin() as connection:
        connection.exec_driver_sql(f"UPDATE energy_meters SET port = {refused_port}")
    result = run_poll(stack)
    assert not result.success
    failure = next(e for e in result.all_node_events if e.event_type_value == "STEP_FAILURE")
    assert "every meter failed: meter 0: FC3 0 (test_measurement): connection refused" in (
        failure.event_specific_data.error.message
    )
    # Their health points were written before the run failed, for the health dashboard.
    assert len(query(stack, 'SELECT * FROM "energymon_poll"')) == 2


def test_dry_run_and_meter_ids(stack):
    result = run_poll(stack, dry_run=True, meter_ids=[1])
    assert result.success
    metadata = output_metadata(result, "write_readings")
    assert metadata["values"].value == 27 and metadata["dry run"].value is True
    assert query(stack, "SHOW MEASUREMENTS") == []
    assert {r.unit_id for r in stack["server"].requests} == {1}


def test_nan_is_dropped_and_counted_never_written(stack):
    stack["sdm"].set_registers(4, 0, encode_value(math.nan, DataType.FLOAT32))
    with stack["engine"].begin() as connection:
        connection.exec_driver_sql(
            "UPDATE registers SET max_value = 60 WHERE measurement_name = 'value70'"
        )
    result = run_poll(stack)
    assert result.success
    assert output_metadata(result, "validate_readings")["dropped"].value == 2
    assert query(stack, 'SELECT * FROM "value0"') == []  # NaN: no point, not a 0
    assert query(stack, 'SELECT * FROM "value70"') == []  # above max_value
    assert len(query(stack, 'SELECT * FROM "value72"')) == 1
    table = {
        r.data["meter"]: r.data for r in output_metadata(result, "write_readings")["meters"].records
    }
    assert table[1]["values"] == 25
    # A meter that lost values is not ok, and says why (not ok=true with 0 errors).
    assert (table[1]["ok"], table[1]["dropped"]) == (False, 2)
    assert table[1]["error"] == (
        "dropped 1 value(s): above max_value; dropped 1 value(s): not finite"
    )
    assert table[0]["ok"] is True
    [health] = query(stack, 'SELECT * FROM "energymon_poll" WHERE "id" = \'1\'')
    assert (health["ok"], health["values"], health["dropped"], health["errors"]) == (
        False, 25, 2, 2
    )  # fmt: skip


def test_poison_rows_cost_only_themselves(stack):
    # Rows written past validation (the original system, a SQL client): a meter whose
    # description holds a line break, a register whose name starts with '#'. Before, either
    # made write_readings fail every run, and no meter's data was written.
    with stack["engine"].begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO energy_meters (id, host, port, slave_address, type, description) "
                "VALUES (2, '127.0.0.1', :port, 1, 'sdm630', :description)"
            ),
            {"port": stack["server"].port, "description": "hall\nB"},
        )
        connection.execute(
            sa.text(
                "INSERT INTO registers (type, register_address, measurement_name, data_type, "
                "function_code, word_order, byte_order) VALUES ('sdm630', 100, '#x', 3, 4, 2, 2)"
            )
        )
    result = run_poll(stack)
    assert result.success
    skipped = output_metadata(result, "load_definitions")["skipped rows"].value
    assert "meter 2: skipped: description 'hall\\nB' contains a line break" in skipped
    assert "'#x'): skipped: measurement_name '#x' starts with '#'" in skipped
    assert {r["id"] for r in query(stack, 'SELECT * FROM "value0"')} == {"1"}
    assert len(query(stack, "SELECT * FROM /^value/")) == len(SDM630_ADDRESSES)
    assert len(query(stack, 'SELECT * FROM "test_measurement"')) == 1


def test_nothing_is_lost_while_influxdb_is_down(stack):
    influxd = stack["influxd"]
    influxd.stop()
    try:
        logs: list = []
        first = run_poll(stack, logs=logs)
        assert first.success, "polling goes on while InfluxDB is down"
        metadata = output_metadata(first, "write_readings")
        # The run's batch, then its energymon_spool point, spooled to follow the backlog.
        assert metadata["spool backlog (batches)"].value == 2
        assert "is unreachable" in metadata["influxdb error"].value
        # One warning line for the outage: no retry with a stack trace, no error event.
        outage = [r for r in logs if r.level >= logging.WARNING and r.step_key == "write_readings"]
        assert [r.user_message for r in outage if "unreachable" in r.user_message] == [
            outage[0].user_message
        ]
        assert outage[0].level == logging.WARNING
        assert not [r for r in logs if r.dagster_event and r.dagster_event.event_specific_data
                    and getattr(r.dagster_event.event_specific_data, "error", None)]  # fmt: skip
    finally:
        influxd.start()
    time.sleep(0.01)
    second = run_poll(stack)
    assert second.success
    assert output_metadata(second, "write_readings")["spool backlog (batches)"].value == 0
    points = query(stack, 'SELECT "value" FROM "value52"')
    assert len(points) == 2, "both runs' readings, each exactly once"
    assert points[0]["time"] < points[1]["time"]
    assert len(query(stack, 'SELECT * FROM "test_measurement"')) == 2
    # The outage is on record: the first run's backlog point arrived with the backlog.
    backlog = query(stack, 'SELECT "batches", "lost_points" FROM "energymon_spool"')
    assert [(p["batches"], p["lost_points"]) for p in backlog] == [(1, 0), (0, 0)]


def test_definitions_load():
    defs = build_definitions({})
    dg.Definitions.validate_loadable(defs)
    assert {j.name for j in defs.resolve_all_job_defs()} >= {
        "poll_meters_job",
        "purge_old_runs_job",
    }


def test_a_group_polls_only_its_links(stack):
    with stack["engine"].begin() as connection:
        connection.exec_driver_sql("UPDATE energy_meters SET poll_group = 'north'")
    north = run_poll(stack, group="north")
    assert north.success
    assert {r.unit_id for r in stack["server"].requests} == {0, 1}
    stack["server"].reset_requests()
    assert run_poll(stack, group="default").success
    assert stack["server"].requests == []
    # Meters 0 and 1 share the server's link: one of them in another group (written past the
    # registry's refusal) is still read with its link by the group of the lowest meter id.
    with stack["engine"].begin() as connection:
        connection.exec_driver_sql("UPDATE energy_meters SET poll_group = NULL WHERE id = 1")
    assert run_poll(stack, group="default").success
    assert stack["server"].requests == []
    assert run_poll(stack, group="north").success
    assert {r.unit_id for r in stack["server"].requests} == {0, 1}


def test_raw_retention_policy(stack):
    """INFLUXDB_RAW_RETENTION: raw readings go to `energymon_raw` (created on start),
    health points and rollups stay in the default policy."""
    from datetime import UTC, datetime

    stack["env"]["INFLUXDB_RAW_RETENTION"] = "90d"
    assert run_poll(stack).success
    policies = {p["name"]: p for p in query(stack, "SHOW RETENTION POLICIES")}
    assert policies["energymon_raw"]["duration"] == "2160h0m0s"
    assert policies["energymon_raw"]["default"] is False
    assert len(query(stack, 'SELECT * FROM "energymon_raw"."test_measurement"')) == 1
    assert query(stack, 'SELECT * FROM "test_measurement"') == []
    assert len(query(stack, 'SELECT * FROM "energymon_poll"')) == 2

    # The rollup reads the raw policy (the current hour has no partition yet: call it directly).
    from datetime import timedelta

    from energymon_pipeline.influx import rollup
    from energymon_pipeline.influx.writer import InfluxWriter

    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with InfluxWriter(stack["influxd"].target(stack["db"])) as writer:
        result = rollup.hourly(writer, start, start + timedelta(hours=1), set(), "energymon_raw")
        writer.write(result.lines)
    assert result.series == 28  # 1 test value + 27 sdm630 values
    [point] = query(
        stack, 'SELECT * FROM "energymon_rollup_1h" WHERE "measurement" = \'test_measurement\''
    )
    assert (point["count"], point["last"]) == (1, -123.0)


def test_bad_raw_retention_is_a_named_error(stack):
    from energymon_pipeline.errors import SettingsError

    with pytest.raises(
        SettingsError, match="INFLUXDB_RAW_RETENTION='forever' is not a retention period"
    ):
        build_definitions({**stack["env"], "INFLUXDB_RAW_RETENTION": "forever"})


def test_data_the_spool_bounds_drop_is_reported_in_the_run(stack):
    # InfluxDB has been down longer than the spool may keep a batch: the loss is an error
    # event of the run, step metadata, and a field of the energymon_spool point, not only a
    # log line on stderr.
    stack["env"]["ENERGYMON_SPOOL_MAX_AGE"] = "1d"
    two_days_ago = Spool(
        stack["env"]["ENERGYMON_SPOOL_DIR"], 1 << 30, 86400, clock=lambda: time.time() - 172800
    )
    two_days_ago.append([f"old,id=1 value={i}.0 {i}" for i in range(5)])
    influxd = stack["influxd"]
    influxd.stop()
    try:
        logs: list = []
        first = run_poll(stack, logs=logs)
    finally:
        influxd.start()
    assert first.success
    assert output_metadata(first, "write_readings")["points lost"].value == 5
    errors = [r.user_message for r in logs if r.level == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith("spool: dropped 1 batch, oldest first (5 points, ")
    assert errors[0].endswith("1 batch older than max_age_s=86400")
    assert run_poll(stack).success  # InfluxDB is back: the first run's backlog arrives
    spool_points = query(stack, 'SELECT "lost_points", "batches" FROM "energymon_spool"')
    assert [(p["lost_points"], p["batches"]) for p in spool_points] == [(5, 1), (0, 0)]
    assert query(stack, 'SELECT * FROM "old"') == []


def gappy_register(address: int) -> dict:
    return {"type": "gappy", "register_address": address, "measurement_name": f"g{address}",
            "data_unit": "V", "data_type": 3, "function_code": 4, "word_order": 2,
            "byte_order": 2}  # fmt: skip


def unit_requests(stack, unit: int) -> list[tuple[int, int]]:
    return [(r.address, r.count) for r in stack["server"].requests if r.unit_id == unit]


def test_a_learnt_split_lasts_into_the_next_runs_until_the_register_map_changes(stack, fetch):
    """Each run is a new process (here: a new instance, a new engine): what the first run
    learnt from exception 2 reaches the second through the registry only."""
    engine = stack["engine"]
    # Values at 0, 4, 8 (registers 2-3 and 6-7 unmapped: a merged read there gets exception
    # 2), and 40-43 that read merged fine.
    queries.insert_registers(engine, [(i, gappy_register(a)) for i, a in
                                      enumerate([0, 4, 8, 40, 42])])  # fmt: skip
    queries.add_meter(engine, {"id": 2, "host": "127.0.0.1", "port": stack["server"].port,
                               "slave_address": 2, "type": "gappy"})  # fmt: skip
    gappy = DeviceMemory()
    for a in (0, 4, 8, 12, 40, 42):
        gappy.set_registers(4, a, encode_value(a + 0.5, DataType.FLOAT32))
    stack["server"].devices[2] = gappy
    stack["server"].reset_requests()

    first = run_poll(stack, meter_ids=[2])
    assert first.success
    assert output_metadata(first, "read_meters")["learnt splits"].value == 3
    merged_failed = (0, 10)
    assert unit_requests(stack, 2) == [merged_failed, (0, 2), (4, 2), (8, 2), (40, 4)]
    assert fetch(engine, "SELECT address FROM meter_learnt_splits ORDER BY address") == [
        (0,), (4,), (8,)
    ]  # fmt: skip

    stack["server"].reset_requests()
    second = run_poll(stack, meter_ids=[2])
    assert second.success
    assert merged_failed not in unit_requests(stack, 2)
    assert unit_requests(stack, 2) == [(0, 2), (4, 2), (8, 2), (40, 4)]
    assert output_metadata(second, "read_meters")["learnt splits"].value == 0
    table = output_metadata(second, "write_readings")["meters"]
    assert [(r.data["meter"], r.data["ok"], r.data["values"]) for r in table.records] == [
        (2, True, 5)
    ]  # fmt: skip

    # The type gains a register: the splits were learnt on another map and are forgotten,
    # the merged read is tried again (and the gap learnt again).
    queries.insert_registers(engine, [(0, gappy_register(12))])
    stack["server"].reset_requests()
    third = run_poll(stack, meter_ids=[2])
    assert third.success
    assert unit_requests(stack, 2) == [(0, 14), (0, 2), (4, 2), (8, 2), (12, 2), (40, 4)]
    assert fetch(engine, "SELECT address FROM meter_learnt_splits ORDER BY address") == [
        (0,), (4,), (8,), (12,)
    ]  # fmt: skip


def test_splits_the_registry_cannot_take_cost_a_warning_not_the_readings(stack, monkeypatch):
    queries.insert_registers(stack["engine"], [(i, gappy_register(a)) for i, a in
                                               enumerate([0, 4])])  # fmt: skip
    queries.add_meter(stack["engine"], {"id": 2, "host": "127.0.0.1",
                                        "port": stack["server"].port, "slave_address": 2,
                                        "type": "gappy"})  # fmt: skip
    gappy = DeviceMemory()
    for a in (0, 4):
        gappy.set_registers(4, a, encode_value(a + 0.5, DataType.FLOAT32))
    stack["server"].devices[2] = gappy

    def unwritable(*args, **kwargs):
        raise RegistryError("the registry is read-only")

    monkeypatch.setattr("energymon_pipeline.ops.poll.save_learnt_splits", unwritable)
    logs: list = []
    result = run_poll(stack, logs=logs, meter_ids=[2])
    assert result.success
    warnings = [r.user_message for r in logs if r.level == logging.WARNING]
    assert "learnt request splits not saved: the registry is read-only" in warnings
    assert sorted(r["name"] for r in query(stack, 'SELECT "value" FROM /^g/')) == ["g0", "g4"]


def test_a_scheduled_run_waits_for_its_second_and_reports_how_late_it_sampled(stack):
    """The schedule launches a run a minute ahead: the run waits for its sample second, never
    samples early, and says how late its first sample was (read_meters metadata and each
    meter's `late_s`); a run that started after its second says how late it was."""
    due = math.ceil(time.time()) + 3
    minute = due - due % 60
    started = time.time()
    result = run_poll(
        stack,
        sample_seconds=[due - minute],
        scheduled_minute=datetime.fromtimestamp(minute, UTC).isoformat(),
    )
    assert result.success
    late = output_metadata(result, "read_meters")["first sample late (s)"].value
    assert 0 <= late < 5, late  # waited for its second; not early
    points = query(stack, 'SELECT "late_s", "values" FROM "energymon_poll" GROUP BY "id"')
    assert len(points) == 2 and all(0 <= p["late_s"] < 5 for p in points), points
    [reading] = query(stack, 'SELECT * FROM "test_measurement"')
    assert reading["time"] >= due * 1000  # sampled at or after its second, not at launch
    assert started < due

    # Due 30 s ago (a run held up in the queue): sampled at once, and the lateness says so.
    past = math.floor(time.time()) - 30
    result = run_poll(
        stack,
        sample_seconds=[past % 60],
        scheduled_minute=datetime.fromtimestamp(past - past % 60, UTC).isoformat(),
    )
    assert result.success
    assert output_metadata(result, "read_meters")["first sample late (s)"].value >= 30
    # A manual run (no sample seconds) has no due time, so no lateness.
    result = run_poll(stack)
    assert "first sample late (s)" not in output_metadata(result, "read_meters")


def test_a_large_run_lists_the_meters_that_are_not_ok_and_counts_the_others():
    """Past METER_TABLE_MAX_ROWS meters the table (stored in every run's events) lists the
    meters with a problem; a small run lists every meter."""
    from energymon_pipeline.influx.poll_health import MeterCounts
    from energymon_pipeline.modbus.reader import MeterResult
    from energymon_pipeline.modbus.types import Endpoint, MeterSpec, RegisterSpec
    from energymon_pipeline.ops.write import METER_TABLE_MAX_ROWS, meter_table

    def result(meter_id: int, ok: bool) -> MeterResult:
        spec = MeterSpec(meter_id=meter_id, endpoint=Endpoint("127.0.0.1", 502, 1),
                         meter_type="t", description=None, registers=(RegisterSpec("v", 0),))  # fmt: skip
        outcome = MeterResult(spec)
        if not ok:
            outcome.errors.append("FC3 0 (v): no answer within 1 s")
        return outcome

    many = [result(i, ok=i % 50 != 7) for i in range(METER_TABLE_MAX_ROWS + 50)]
    counts = {i: MeterCounts() for i in range(len(many))}
    table, unlisted = meter_table(many, counts)
    assert [r.data["meter"] for r in table.records] == [7, 57, 107]
    assert unlisted == len(many) - 3
    few = many[:10]
    table, unlisted = meter_table(few, counts)
    assert [r.data["meter"] for r in table.records] == list(range(10)) and unlisted == 0

"""new_meter_sensor with build_sensor_context(cursor=..., resources=...) over a real registry
(SQLite and PostgreSQL): insert, edit, disable, re-enable, remove, and an empty table."""

from __future__ import annotations

import json

import dagster as dg
import sqlalchemy as sa

from energymon_pipeline.jobs import connectivity_check_job
from energymon_pipeline.registry import db, queries
from energymon_pipeline.resources import RegistryResource
from energymon_pipeline.sensors import build_new_meter_sensor

SENSOR = build_new_meter_sensor(connectivity_check_job, 60)


def tick(registry_url: str, cursor: str | None):
    """One tick as the code server evaluates it: the context (and its resources) closed after."""
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            cursor=cursor,
            instance=instance,
            resources={"registry": RegistryResource(database_url=registry_url)},
        ) as context,
    ):
        return SENSOR.evaluate_tick(context)


def checked_ids(result) -> list[int]:
    """The meters a tick requests checks of; each request's run config is valid for the job."""
    for request in result.run_requests or []:
        dg.validate_run_config(connectivity_check_job, request.run_config)
    return [
        r.run_config["ops"]["check_meter_connectivity"]["config"]["meter_id"]
        for r in result.run_requests or []
    ]


def sql(engine, statement: str) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text(statement))


def test_interval_from_scheduler_cron_never_below_5_s():
    assert SENSOR.minimum_interval_seconds == 60
    assert build_new_meter_sensor(connectivity_check_job, 1).minimum_interval_seconds == 5
    assert SENSOR.default_status == dg.DefaultSensorStatus.RUNNING


def test_insert_edit_disable_enable_remove(migrated, registry_url):
    first = tick(registry_url, None)
    assert checked_ids(first) == [0]  # a fresh stack checks the seeded virtual meter
    cursor = first.cursor

    quiet = tick(registry_url, cursor)
    assert checked_ids(quiet) == []
    assert quiet.skip_message == "no new or changed meters among 1 enabled"

    queries.add_meter(migrated, {"host": "10.0.0.7", "port": 502, "slave_address": 1,
                                 "type": "virtual_modbustcp"})  # fmt: skip
    added = tick(registry_url, cursor)
    assert checked_ids(added) == [1]
    [request] = added.run_requests
    assert request.run_key.startswith("meter-1-")
    cursor = added.cursor

    sql(migrated, "UPDATE energy_meters SET port = 1502 WHERE id = 1")  # edited with any client
    edited = tick(registry_url, cursor)
    assert checked_ids(edited) == [1]
    assert edited.run_requests[0].run_key != request.run_key, "a new version, a new run key"
    cursor = edited.cursor

    queries.set_meter_enabled(migrated, 1, False)
    disabled = tick(registry_url, cursor)
    assert checked_ids(disabled) == []
    assert "1" not in json.loads(disabled.cursor)
    cursor = disabled.cursor

    queries.set_meter_enabled(migrated, 1, True)
    reenabled = tick(registry_url, cursor)
    assert checked_ids(reenabled) == [1]
    cursor = reenabled.cursor

    queries.remove_meter(migrated, 1)
    removed = tick(registry_url, cursor)
    assert checked_ids(removed) == []
    assert json.loads(removed.cursor) == {"0": json.loads(cursor)["0"]}

    queries.add_meter(migrated, {"id": 1, "host": "10.0.0.7", "port": 502, "slave_address": 1,
                                 "type": "virtual_modbustcp"})  # fmt: skip
    readded = tick(registry_url, removed.cursor)
    assert checked_ids(readded) == [1]
    assert readded.run_requests[0].run_key not in {request.run_key, edited.run_requests[0].run_key}


def test_same_version_is_never_requested_twice(migrated, registry_url):
    first = tick(registry_url, None)
    again = tick(registry_url, None)  # e.g. a lost cursor: same run key, Dagster dedups it
    assert [r.run_key for r in first.run_requests] == [r.run_key for r in again.run_requests]


def test_empty_table_is_a_skip_not_an_error(migrated, registry_url):
    sql(migrated, "DELETE FROM energy_meters")
    result = tick(registry_url, json.dumps({"0": "2026-01-01T00:00:00+00:00"}))
    assert not result.run_requests
    assert result.skip_message == "the energy_meters table is empty: nothing to check"
    assert json.loads(result.cursor) == {}


def test_ticks_leave_no_engine_or_connection_behind(migrated, registry_url, monkeypatch):
    """The code server evaluates tick after tick in one process: each tick's engine is its
    own and is disposed (its pooled connections closed) when the tick ends."""
    engines = []
    create_engine = db.create_engine

    def spy(url=None):
        engines.append(create_engine(url))
        return engines[-1]

    monkeypatch.setattr(db, "create_engine", spy)
    cursor = tick(registry_url, None).cursor
    tick(registry_url, cursor)
    assert len(engines) == 2, "one engine per tick, none kept between ticks"
    assert [(e.pool.checkedin(), e.pool.checkedout()) for e in engines] == [(0, 0), (0, 0)]

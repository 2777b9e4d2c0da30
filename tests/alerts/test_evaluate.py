"""The evaluation on its own, with states written as a poll writes them and a clock the test
moves: degraded alerts (off by default), disabled meters, reminders off, the spool backlog,
no channel configured, a delivery another sensor holds. Registry on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta

import dagster as dg
import sqlalchemy as sa

from energymon_pipeline.alerts.config import alert_settings
from energymon_pipeline.alerts.evaluate import evaluate, senders
from energymon_pipeline.alerts.outbox import deliver, history
from energymon_pipeline.alerts.states import PollOutcome, update_states
from energymon_pipeline.influx.spool import Spool
from energymon_pipeline.ops.alerts import AlertsResource, build_meter_alert_sensor
from energymon_pipeline.registry import queries
from energymon_pipeline.registry.tables import alert_deliveries
from energymon_pipeline.resources import InfluxResource, RegistryResource


def add_meter(engine, meter_id: int) -> None:
    queries.add_meter(engine, {"id": meter_id, "host": "127.0.0.1", "port": 1502,
                               "slave_address": meter_id, "type": "t"})  # fmt: skip


def polled(engine, clock, outcome: str, meter_id: int = 1, down_after: int = 3) -> None:
    clock.advance(minutes=1)
    error = None if outcome == "ok" else "FC4 100 (v): modbus exception 2 (illegal address)"
    update_states(engine, [PollOutcome(meter_id, outcome, error)], clock(), down_after)


def run(engine, clock, receiver, **env):
    settings = alert_settings({"ENERGYMON_ALERT_WEBHOOK_URL": receiver.url, **env})
    return evaluate(engine, settings, clock(), senders(settings, lambda s: None))


def test_degraded_is_silent_by_default(migrated, clock, receiver):
    add_meter(migrated, 1)
    for _ in range(3):
        polled(migrated, clock, "degraded")
        assert run(migrated, clock, receiver).raised == []
    assert receiver.received == []


def test_degraded_alert_when_enabled_then_back(migrated, clock, receiver):
    add_meter(migrated, 1)
    on = {"ENERGYMON_ALERT_DEGRADED": "true"}
    polled(migrated, clock, "degraded")
    assert run(migrated, clock, receiver, **on).raised == [
        "meter_degraded meter 1 (127.0.0.1:1502 unit 1)"
    ]
    polled(migrated, clock, "degraded")
    assert run(migrated, clock, receiver, **on).raised == []
    polled(migrated, clock, "ok")
    assert len(run(migrated, clock, receiver, **on).raised) == 1
    assert receiver.kinds() == ["meter_degraded", "meter_recovered"]
    assert "lost values" in receiver.texts()[0] and "exception 2" in receiver.received[0]["reason"]


def test_down_then_degraded_is_a_recovery(migrated, clock, receiver):
    add_meter(migrated, 1)
    for _ in range(3):
        polled(migrated, clock, "failed")
    run(migrated, clock, receiver)
    polled(migrated, clock, "degraded")
    run(migrated, clock, receiver)
    assert receiver.kinds() == ["meter_down", "meter_recovered"]
    assert "is back (degraded)" in receiver.texts()[1]


def test_a_disabled_meter_raises_nothing(migrated, clock, receiver):
    add_meter(migrated, 1)
    for _ in range(3):
        polled(migrated, clock, "failed")
    queries.set_meter_enabled(migrated, 1, False)
    evaluation = run(migrated, clock, receiver)
    assert evaluation.raised == [] and sum(evaluation.states.values()) == 0
    queries.set_meter_enabled(migrated, 1, True)  # enabled again: starts afresh
    polled(migrated, clock, "failed")
    assert run(migrated, clock, receiver).raised == []


def test_no_reminders_with_repeat_hours_0(migrated, clock, receiver):
    add_meter(migrated, 1)
    for _ in range(3):
        polled(migrated, clock, "failed")
    run(migrated, clock, receiver, ENERGYMON_ALERT_REPEAT_HOURS="0")
    clock.advance(days=30)
    polled(migrated, clock, "failed")
    assert run(migrated, clock, receiver, ENERGYMON_ALERT_REPEAT_HOURS="0").raised == []
    assert receiver.kinds() == ["meter_down"]


def test_without_a_channel_the_history_is_kept(migrated, clock):
    add_meter(migrated, 1)
    for _ in range(3):
        polled(migrated, clock, "failed")
    evaluation = evaluate(migrated, alert_settings({}), clock(), {})
    assert len(evaluation.raised) == 1 and evaluation.delivery.sent == []
    [alert] = history(migrated)
    assert alert["kind"] == "meter_down" and alert["deliveries"] == {}


def test_a_delivery_held_by_another_sensor_is_not_sent(migrated, clock, receiver):
    add_meter(migrated, 1)
    for _ in range(3):
        polled(migrated, clock, "failed")
    settings = alert_settings({"ENERGYMON_ALERT_WEBHOOK_URL": receiver.url})
    evaluate(migrated, settings, clock(), {})  # raised and queued, nothing sent
    with migrated.begin() as connection:
        connection.execute(
            alert_deliveries.update().values(lease_until=clock() + timedelta(minutes=5))
        )
    assert run(migrated, clock, receiver).delivery.sent == []
    clock.advance(minutes=11)  # the holder died: its lease ran out
    assert len(run(migrated, clock, receiver).delivery.sent) == 1
    assert receiver.kinds() == ["meter_down"]


def spool_tick(engine_url, spool_dir, clock, receiver):
    settings = alert_settings({"ENERGYMON_ALERT_WEBHOOK_URL": receiver.url})
    sensor = build_meter_alert_sensor(60, clock=clock, sleep=lambda s: None)
    with dg.build_sensor_context(
        resources={
            "registry": RegistryResource(database_url=engine_url),
            "alerts": AlertsResource.of(settings),
            "influx": InfluxResource(spool_dir=str(spool_dir)),
        }
    ) as context:
        return sensor.evaluate_tick(context).skip_message


def test_spool_backlog_once_then_recovered(
    migrated, registry_url, clock, receiver, tmp_path, monkeypatch
):
    monkeypatch.setenv("ENERGYMON_ALERT_WEBHOOK_URL", receiver.url)  # read as dg.EnvVar
    spool_dir = tmp_path / "spool"
    path = InfluxResource(spool_dir=str(spool_dir)).write_path().spool.path
    assert "spool: empty" in spool_tick(registry_url, spool_dir, clock, receiver)
    young = Spool(path, 1024**2, 86400, clock=lambda: time.time() - 60)
    young.append(["m value=1 1"])
    assert "raised 0" in spool_tick(registry_url, spool_dir, clock, receiver)
    old = Spool(path, 1024**2, 86400, clock=lambda: time.time() - 20 * 60)
    old.append(["m value=2 2"])
    message = spool_tick(registry_url, spool_dir, clock, receiver)
    assert "spool: oldest waiting 20 min" in message and "raised 1" in message
    clock.advance(hours=1)
    assert "raised 0" in spool_tick(registry_url, spool_dir, clock, receiver)
    for item in list(path.glob("*")):  # InfluxDB took them
        if item.is_file():
            item.unlink()
    assert "raised 1" in spool_tick(registry_url, spool_dir, clock, receiver)
    assert receiver.kinds() == ["spool_backlog", "spool_recovered"]
    assert "waited 20 min in the spool" in receiver.texts()[0]
    with migrated.connect() as connection:
        assert connection.scalar(sa.text("SELECT count(*) FROM alerts")) == 2


def test_no_new_send_after_the_budget(migrated, clock, receiver):
    """What did not fit in one evaluation's time waits, queued, for the next."""
    for meter_id in (1, 2):
        add_meter(migrated, meter_id)
        for _ in range(3):
            polled(migrated, clock, "failed", meter_id)
    settings = alert_settings({"ENERGYMON_ALERT_WEBHOOK_URL": receiver.url})
    evaluate(migrated, settings, clock(), {})  # two alerts raised and queued
    report = deliver(migrated, senders(settings), clock(), budget_s=-1)
    assert report.sent == [] and report.waiting == {"webhook": 2}
    report = deliver(migrated, senders(settings), clock())
    assert len(report.sent) == 2 and report.waiting == {}
    assert [r["meter"]["id"] for r in receiver.received] == [1, 2]


def test_failing_but_not_down_raises_nothing(migrated, clock, receiver):
    add_meter(migrated, 1)
    for outcome in ("failed", "failed", "ok", "failed", "failed", "ok"):
        polled(migrated, clock, outcome)
        evaluation = run(migrated, clock, receiver)
        assert evaluation.raised == [], outcome
    assert receiver.received == []

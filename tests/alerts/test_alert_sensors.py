"""The alerts through the real jobs and sensors: poll_meters_job runs against real Modbus
servers (one of which is stopped and started again), a real influxd and the registry
(SQLite and PostgreSQL); meter_alert_sensor ticks with a clock the test moves, sending to a
loopback webhook receiver and a real SMTP server (aiosmtpd, STARTTLS and a login).

Told once when it breaks, once when it is back, reminded while it stays down, nothing in
between, nothing lost while the receiver was down, nothing sent twice."""

from __future__ import annotations

import email
import email.policy
import json

import dagster as dg
import pytest
from conftest import SMTP_PASSWORD, TOKEN

from energymon_pipeline.alerts.config import alert_settings
from energymon_pipeline.definitions import build_definitions
from energymon_pipeline.modbus.decode import encode_value
from energymon_pipeline.modbus.types import DataType
from energymon_pipeline.ops.alerts import (
    AlertsResource,
    build_meter_alert_sensor,
    build_poll_failure_sensor,
)
from energymon_pipeline.registry import db, queries
from energymon_pipeline.resources import InfluxResource, RegistryResource
from virtual_server import DeviceMemory, DeviceMemoryServer

ADDRESSES = (0, 2)


def device(addresses=ADDRESSES) -> DeviceMemory:
    memory = DeviceMemory()
    for a in addresses:
        memory.set_registers(4, a, encode_value(a + 0.5, DataType.FLOAT32))
    return memory


@pytest.fixture
def fleet(registry_url, influxd, influx_db, tmp_path, receiver, mailbox, monkeypatch):
    """Meter 1 on a server of its own (stopped and started by the test), meter 2 always up,
    meter 3 answering only one of its two registers (degraded), meter 0 disabled."""
    flaky = DeviceMemoryServer({1: device()}, host="127.0.0.1", port=0).start_in_thread()
    steady = DeviceMemoryServer({2: device(), 3: device((0,))}, host="127.0.0.1", port=0)
    steady.start_in_thread()
    engine = db.create_engine(registry_url)
    db.upgrade(engine)
    queries.insert_registers(
        engine,
        [(i, {"type": "t2", "register_address": a, "measurement_name": f"v{a}", "data_unit": "V",
              "data_type": 3, "function_code": 4, "word_order": 2, "byte_order": 2})
         for i, a in enumerate((0, 100))],
    )  # fmt: skip
    queries.set_meter_enabled(engine, 0, False)
    for meter_id, server in ((1, flaky), (2, steady), (3, steady)):
        queries.add_meter(engine, {"id": meter_id, "host": "127.0.0.1", "port": server.port,
                                   "slave_address": meter_id, "type": "t2",
                                   "description": f"meter {meter_id}", "timeout_s": 0.5,
                                   "retries": 0})  # fmt: skip
    # Meter 1 and 2 read 0 and 100 in one request each; meter 2's device maps 100 as well.
    steady.devices[2].set_registers(4, 100, encode_value(1.5, DataType.FLOAT32))
    flaky.devices[1].set_registers(4, 100, encode_value(1.5, DataType.FLOAT32))
    env = {
        "ENERGYMON_DATABASE_URL": registry_url,
        "INFLUXDB_HOSTNAME": influxd.host,
        "INFLUXDB_PORT": str(influxd.port),
        "INFLUXDB_DB": influx_db,
        "ENERGYMON_SPOOL_DIR": str(tmp_path / "spool"),
        "ENERGYMON_ALERT_WEBHOOK_URL": receiver.url,
        "ENERGYMON_ALERT_WEBHOOK_RETRIES": "1",
        **mailbox.env(),
    }
    for name, value in env.items():  # the secrets reach the resources as dg.EnvVar
        monkeypatch.setenv(name, value)
    state = {"engine": engine, "env": env, "flaky": flaky, "steady": steady}
    yield state
    state["flaky"].stop_thread()
    steady.stop_thread()
    engine.dispose()


def poll(fleet, instance, **config) -> dg.ExecuteInProcessResult:
    job = build_definitions(fleet["env"]).resolve_job_def("poll_meters_job")
    run_config = {"ops": {"load_definitions": {"config": config}}} if config else None
    return job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False)


def tick(fleet, clock, instance, cursor=None, **overrides) -> tuple[str, str]:
    """One meter_alert_sensor tick; returns (skip message, cursor)."""
    settings = alert_settings({**fleet["env"], **overrides})
    sensor = build_meter_alert_sensor(60, clock=clock, sleep=lambda s: None)
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "registry": RegistryResource(database_url=fleet["env"]["ENERGYMON_DATABASE_URL"]),
            "alerts": AlertsResource.of(settings),
            "influx": InfluxResource(spool_dir=fleet["env"]["ENERGYMON_SPOOL_DIR"]),
        },
    ) as context:
        result = sensor.evaluate_tick(context)
    assert not result.run_requests
    return result.skip_message, result.cursor


def meter_states(fleet) -> dict[int, str]:
    return {
        row["meter_id"]: row["state"]
        for row in queries.run_in_transaction(
            fleet["engine"],
            lambda c: (
                c.exec_driver_sql("SELECT meter_id, state FROM meter_states").mappings().all()
            ),
        )
    }


def subjects(mailbox) -> list[str]:
    return [
        email.message_from_bytes(m.content, policy=email.policy.default)["Subject"]
        for m in mailbox.messages
    ]


def test_down_once_reminded_back_once_nothing_lost(fleet, clock, receiver, mailbox):
    with dg.instance_for_test() as instance:
        assert poll(fleet, instance).success
        assert meter_states(fleet) == {1: "ok", 2: "ok", 3: "degraded"}  # 0 is disabled
        message, _ = tick(fleet, clock, instance)
        assert "3 meter state(s) (1 degraded, 2 ok)" in message and "raised 0" in message

        fleet["flaky"].stop_thread()  # meter 1 stops answering
        for n in range(1, 3):
            assert poll(fleet, instance).success  # the other meters were read
            assert meter_states(fleet)[1] == "failing"
            clock.advance(minutes=1)
            message, _ = tick(fleet, clock, instance)
            assert "raised 0" in message, f"poll {n}: {message}"
        assert receiver.received == [] and mailbox.messages == []

        assert poll(fleet, instance).success
        assert meter_states(fleet)[1] == "down"
        clock.advance(minutes=1)
        message, cursor = tick(fleet, clock, instance)
        assert "1 down" in message and "raised 1" in message and "sent 2" in message
        [down] = receiver.received
        assert down["kind"] == "meter_down" and down["meter"]["id"] == 1
        assert down["meter"]["description"] == "meter 1" and down["meter"]["unit"] == 1
        assert down["text"].startswith("meter 1 meter 1 (127.0.0.1:")
        assert "is down: 3 failed polls in a row" in down["text"] and down["reason"]
        assert json.loads(cursor)["sent"] == 2

        for _ in range(2):  # still down: nothing new
            assert poll(fleet, instance).success
            clock.advance(hours=6)
            message, _ = tick(fleet, clock, instance)
            assert "raised 0" in message and "sent 0" in message
        assert len(receiver.received) == len(mailbox.messages) == 1

        clock.advance(hours=12)  # 24 h since the down alert
        message, _ = tick(fleet, clock, instance)
        assert "raised 1" in message
        assert receiver.kinds() == ["meter_down", "meter_down_reminder"]
        message, _ = tick(fleet, clock, instance)
        assert "raised 0" in message

        # The meter comes back while the webhook receiver is down.
        port = fleet["flaky"].port
        fleet["flaky"] = DeviceMemoryServer({1: device((0, 100))}, host="127.0.0.1", port=port)
        fleet["flaky"].start_in_thread()
        assert poll(fleet, instance).success
        assert meter_states(fleet)[1] == "ok"
        receiver.fail_next = 100
        clock.advance(minutes=1)
        message, cursor = tick(fleet, clock, instance)
        assert "raised 1" in message and "sent 1" in message and "not sent 1" in message
        assert json.loads(cursor)["queued"] == {"webhook": 1}
        assert receiver.attempts == 1 + 1 + 2  # two earlier alerts, then two failed attempts

        receiver.fail_next = 0
        clock.advance(minutes=1)
        message, _ = tick(fleet, clock, instance)
        assert "raised 0" in message and "sent 1" in message
        for _ in range(2):
            clock.advance(minutes=1)
            message, _ = tick(fleet, clock, instance)
            assert "sent 0" in message and "queued" not in message

    assert receiver.kinds() == ["meter_down", "meter_down_reminder", "meter_recovered"]
    assert receiver.received[2]["meter"]["id"] == 1
    assert [s.split(" is ")[1].split()[0] for s in subjects(mailbox)] == ["down:", "still", "back"]
    assert all(s.startswith("[energymon] meter 1 meter 1") for s in subjects(mailbox))

    history = queries.run_in_transaction(
        fleet["engine"],
        lambda c: c.exec_driver_sql(
            "SELECT a.kind, d.channel, d.status, d.attempts FROM alerts a "
            "JOIN alert_deliveries d ON d.alert_id = a.id ORDER BY a.id, d.channel"
        ).all(),
    )
    assert [tuple(r) for r in history] == [
        ("meter_down", "email", "sent", 1),
        ("meter_down", "webhook", "sent", 1),
        ("meter_down_reminder", "email", "sent", 1),
        ("meter_down_reminder", "webhook", "sent", 1),
        ("meter_recovered", "email", "sent", 1),
        ("meter_recovered", "webhook", "sent", 2),
    ]


def failure_tick(fleet, clock, instance, result: dg.ExecuteInProcessResult) -> None:
    """poll_failure_sensor on a failed run, as the daemon would call it."""
    settings = alert_settings(fleet["env"])
    sensor = build_poll_failure_sensor(
        build_definitions(fleet["env"]).resolve_job_def("poll_meters_job"),
        clock=clock,
        sleep=lambda s: None,
    )
    with dg.build_run_status_sensor_context(
        sensor_name="poll_failure_sensor",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={
            "registry": RegistryResource(database_url=fleet["env"]["ENERGYMON_DATABASE_URL"]),
            "alerts": AlertsResource.of(settings),
        },
    ) as context:
        sensor(context.for_run_failure())


def test_a_failed_poll_run_is_announced_once_until_a_run_succeeds(fleet, clock, receiver):
    with dg.instance_for_test() as instance:
        fleet["flaky"].stop_thread()
        fleet["steady"].stop_thread()  # every meter fails: the run fails
        failed = [poll(fleet, instance) for _ in range(2)]
        assert not any(r.success for r in failed)
        for result in failed:
            clock.advance(minutes=1)
            failure_tick(fleet, clock, instance, result)
        assert receiver.kinds() == ["poll_failed"]  # the second is the same outage
        assert receiver.received[0]["meter"] is None
        assert receiver.texts()[0].startswith(f"Poll run {failed[0].run_id} (every meter) failed")
        assert "every meter failed" in receiver.texts()[0]

        steady = DeviceMemoryServer(
            {2: device((0, 100)), 3: device((0, 100))}, host="127.0.0.1", port=fleet["steady"].port
        )
        fleet["steady"] = steady.start_in_thread()
        assert poll(fleet, instance).success  # a run succeeds in between
        fleet["steady"].stop_thread()
        again = poll(fleet, instance)
        assert not again.success
        clock.advance(minutes=1)
        failure_tick(fleet, clock, instance, again)
        assert receiver.kinds() == ["poll_failed", "poll_failed"]


def test_no_secret_in_the_event_log_or_storage(fleet, clock, receiver, mailbox, tmp_path, capfd):
    """The webhook URL's token and the SMTP password reach the sensors (the alerts are sent)
    but nothing Dagster stores or shows: resource config, run config, event log, the sensor's
    cursor and logs, the instance's files."""
    defs = build_definitions(fleet["env"])
    resource = defs.resources["alerts"]
    assert isinstance(resource.webhook_url, dg.EnvVar)
    assert isinstance(resource.smtp_password, dg.EnvVar)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        fleet["flaky"].stop_thread()
        results = [poll(fleet, instance) for _ in range(3)]
        assert all(r.success for r in results)
        sensor = defs.resolve_sensor_def("meter_alert_sensor")
        with dg.build_sensor_context(
            instance=instance, resources=defs.resources, sensor_name="meter_alert_sensor"
        ) as context:
            tick_result = sensor.evaluate_tick(context)
        assert "sent 2" in tick_result.skip_message
        assert len(receiver.received) == 1 and len(mailbox.messages) == 1
        stored = [tick_result.skip_message, tick_result.cursor or ""]
        for result in results:
            for entry in instance.all_logs(result.run_id):
                stored.append(str(entry))
            stored.append(json.dumps(instance.get_run_by_id(result.run_id).run_config))
        stored.append(repr(resource))
    printed = capfd.readouterr()  # the runs' and the sensor's log lines, as printed
    stored += [printed.out, printed.err]
    assert "raised: meter_down meter 1" in printed.err  # the sensor's log is in there
    for secret in (TOKEN, SMTP_PASSWORD):
        assert not any(secret in text for text in stored), secret
        for path in home.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"{secret} in {path}"
    assert any(p.suffix == ".db" for p in home.rglob("*"))  # the SQLite storages were searched
    alerts = queries.run_in_transaction(
        fleet["engine"], lambda c: c.exec_driver_sql("SELECT * FROM alert_deliveries").all()
    )
    assert alerts and not any(TOKEN in str(row) for row in alerts)


def test_the_sensors_are_in_the_definitions_and_on_by_default():
    defs = build_definitions({})
    for name in ("meter_alert_sensor", "poll_failure_sensor", "new_meter_sensor"):
        sensor = defs.resolve_sensor_def(name)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING, name
    assert defs.resolve_sensor_def("meter_alert_sensor").minimum_interval_seconds == 60
    assert (
        build_definitions({"ENERGYMON_ALERT_INTERVAL_S": "30"})
        .resolve_sensor_def("meter_alert_sensor")
        .minimum_interval_seconds
        == 30
    )


def test_the_runs_config_sets_the_down_threshold(fleet):
    """The schedule passes the code server's ENERGYMON_ALERT_DOWN_AFTER in the run config (a
    run container lacks the alert settings): it wins over the run's own (3 here)."""
    fleet["flaky"].stop_thread()
    with dg.instance_for_test() as instance:
        assert poll(fleet, instance).success
        assert meter_states(fleet)[1] == "failing"  # 1 failed poll of the run's own 3
        assert poll(fleet, instance, down_after=2).success
        assert meter_states(fleet)[1] == "down"
        before = meter_states(fleet)
        result = poll(fleet, instance, down_after=0)
        assert meter_states(fleet) == before, "a refused threshold changes no state"
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "down_after=0 is out of range; allowed: 1 to 10000" in message
    assert "Traceback" not in message

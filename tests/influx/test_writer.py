"""The writer against this session's real influxd: the point shape the original Grafana
dashboards query, database creation, and each failure classified with a one-line message."""

from __future__ import annotations

import http.server
import threading
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from energymon_pipeline.errors import EnergymonError
from energymon_pipeline.influx.points import poll_health_line, reading_lines
from energymon_pipeline.influx.writer import (
    InfluxAuthError,
    InfluxBadRequest,
    InfluxDatabaseMissing,
    InfluxServerError,
    InfluxTarget,
    InfluxUnreachable,
    InfluxWriter,
)

T0 = datetime(2024, 6, 1, 0, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def frame(rows: list[dict]) -> pd.DataFrame:
    result = pd.DataFrame(rows)
    result["time"] = pd.to_datetime(result["time"], utc=True)
    return result


def reading(minute: int, measurement: str, value: float, **extra) -> dict:
    return {
        "time": T0 + timedelta(minutes=minute),
        "meter_id": 1,
        "description": "main",
        "meter_type": "sdm630",
        "measurement": measurement,
        "unit": "V" if measurement.startswith("voltage") else "kWh",
        "value": value,
    } | extra


def assert_one_line(error: Exception) -> str:
    message = str(error)
    assert "\n" not in message
    assert isinstance(error, EnergymonError)
    return message


def test_the_dashboard_queries_read_what_was_written(influxd, influx_db):
    rows = [reading(m, "voltageL1", 230.0 + m) for m in range(4)]  # 230, 231, 232, 233
    rows += [reading(0, "voltageL1", 100.0, meter_id=2, description="garage")]
    # An energy counter read every 30 minutes over three hours; hourly maxima 101, 103.5, 107.5, 110.
    energy = [100.0, 101.0, 102.0, 103.5, 105.0, 107.5, 110.0]
    rows += [reading(30 * i, "totalEnergy", value) for i, value in enumerate(energy)]
    with InfluxWriter(influxd.target(influx_db)) as writer:
        writer.write(reading_lines(frame(rows)))

    assert influxd.query(
        """SELECT mean("value") FROM "voltageL1" WHERE "description" = 'main'""", influx_db
    ) == [{"time": 0, "mean": 231.5, "name": "voltageL1"}]
    assert influxd.query(
        """SELECT last("value") FROM "voltageL1" WHERE "description" = 'main'""", influx_db
    ) == [{"time": T0_MS + 3 * 60_000, "last": 233.0, "name": "voltageL1"}]
    hourly = influxd.query(
        """SELECT non_negative_difference(max("value")) FROM "totalEnergy" """
        f"""WHERE "description" = 'main' AND time >= {T0_MS}ms AND time < {T0_MS + 4 * 3_600_000}ms """
        """GROUP BY time(1h)""",
        influx_db,
    )
    assert [(row["time"], row["non_negative_difference"]) for row in hourly] == [
        (T0_MS + 3_600_000, 2.5),  # max of hour 1 (103.5) - max of hour 0 (101.0)
        (T0_MS + 2 * 3_600_000, 4.0),
        (T0_MS + 3 * 3_600_000, 2.5),
    ]
    assert influxd.query('SHOW TAG KEYS FROM "voltageL1"', influx_db) == [
        {"tagKey": key, "name": "voltageL1"} for key in ["dataunit", "description", "id", "type"]
    ]
    assert influxd.query('SHOW FIELD KEYS FROM "voltageL1"', influx_db) == [
        {"fieldKey": "value", "fieldType": "float", "name": "voltageL1"}
    ]
    assert influxd.query(
        """SELECT "value", "id", "dataunit", "type" FROM "voltageL1" WHERE "description" = 'garage'""",
        influx_db,
    ) == [
        {
            "time": T0_MS,
            "value": 100.0,
            "id": "2",
            "dataunit": "V",
            "type": "sdm630",
            "name": "voltageL1",
        }
    ]


def test_awkward_names_and_tag_values_round_trip(influxd, influx_db):
    descriptions = [
        "a,b",
        "a b",
        "a=b",
        r"a\b",
        r"a\ b",
        r"a\,b",
        'say "hi"',
        "m³ °C",
        " x",
        "zaż\u2028ółć",
    ]
    rows = [
        reading(i, "active power, L1=sum", float(i), description=text)
        for i, text in enumerate(descriptions)
    ]
    with InfluxWriter(influxd.target(influx_db)) as writer:
        writer.write(reading_lines(frame(rows)))
    stored = influxd.query('SELECT "value", "description" FROM "active power, L1=sum"', influx_db)
    assert [row["description"] for row in stored] == descriptions
    assert (
        influxd.query(
            """SELECT "value" FROM "active power, L1=sum" WHERE "description" = 'a,b'""", influx_db
        )[0]["value"]
        == 0.0
    )


def test_writing_a_batch_again_stores_each_point_once(influxd, influx_db):
    lines = reading_lines(frame([reading(m, "voltageL1", 230.0 + m) for m in range(5)]))
    with InfluxWriter(influxd.target(influx_db)) as writer:
        writer.write(lines)
        writer.write(lines)
    assert influxd.query('SELECT count("value") FROM "voltageL1"', influx_db)[0]["count"] == 5


def test_a_batch_larger_than_a_request_goes_out_in_requests_two_at_a_time(influxd, influx_db):
    """11 points with 3 per request: 4 requests (2 per lane, both lanes at once), every
    point stored once; the database is created on the way (each lane met it missing)."""
    lines = reading_lines(frame([reading(m, "voltageL1", 230.0 + m) for m in range(11)]))
    database = influx_db + "_lanes"
    with InfluxWriter(influxd.target(database), batch_size=3) as writer:
        writer.write(lines)
        assert len(writer._extra_clients) == 1
    assert influxd.query('SELECT count("value") FROM "voltageL1"', database)[0]["count"] == 11


def test_one_bad_request_of_a_batch_fails_the_batch_and_costs_no_other_point(influxd, influx_db):
    """The bad point's request is refused (the caller keeps the batch to send again, or sets
    it aside); the other requests, in flight beside it, store their points."""
    good = reading_lines(frame([reading(m, "voltageL1", 230.0 + m) for m in range(8)]))
    lines = good[:5] + [f"voltageL1,id=1 value=abc {T0_MS}"] + good[5:]
    with (
        InfluxWriter(influxd.target(influx_db), batch_size=3) as writer,
        pytest.raises(InfluxBadRequest),
    ):
        writer.write(lines)
    assert influxd.query('SELECT count("value") FROM "voltageL1"', influx_db)[0]["count"] == 8


def test_health_points_keep_their_field_types(influxd, influx_db):
    lines = [
        poll_health_line(time=T0, meter_id=1, description="main", meter_type="sdm630", ok=True,
                         latency_ms=12.0, requests=2, values=27, errors=0),
        poll_health_line(time=T0, meter_id=2, description=None, meter_type="sdm630", ok=False,
                         latency_ms=None, requests=1, values=0, errors=1),
    ]  # fmt: skip
    with InfluxWriter(influxd.target(influx_db)) as writer:
        writer.write(lines)
    fields = {
        row["fieldKey"]: row["fieldType"]
        for row in influxd.query('SHOW FIELD KEYS FROM "energymon_poll"', influx_db)
    }
    assert fields == {
        "ok": "boolean",
        "dropped": "integer",
        "latency_ms": "float",
        "requests": "integer",
        "values": "integer",
        "errors": "integer",
    }
    rows = influxd.query('SELECT * FROM "energymon_poll" ORDER BY time', influx_db)
    assert sorted((row["id"], row["ok"], row["errors"]) for row in rows) == [
        ("1", True, 0),
        ("2", False, 1),
    ]


def test_the_database_is_created_when_missing(influxd, influx_db):
    assert {"name": influx_db} not in influxd.query("SHOW DATABASES")
    with InfluxWriter(influxd.target(influx_db)) as writer:
        writer.write([f"voltageL1,id=1 value=1.0 {T0_MS}"])
        writer.ensure_database()  # idempotent
    assert {"name": influx_db} in influxd.query("SHOW DATABASES")


def test_a_missing_database_is_an_error_when_creating_is_off(influxd, influx_db):
    with (
        InfluxWriter(influxd.target(influx_db), create_database=False) as writer,
        pytest.raises(InfluxDatabaseMissing) as raised,
    ):
        writer.write([f"voltageL1,id=1 value=1.0 {T0_MS}"])
    assert assert_one_line(raised.value) == (
        f"InfluxDB at http://127.0.0.1:{influxd.port}/{influx_db}: database '{influx_db}' "
        "does not exist (creating it is turned off)"
    )


def test_an_unreachable_port_is_a_clear_retryable_error(refused_port):
    target = InfluxTarget(host="127.0.0.1", port=refused_port, database="energy", timeout_s=2)
    with InfluxWriter(target) as writer, pytest.raises(InfluxUnreachable) as raised:
        writer.write([f"voltageL1,id=1 value=1.0 {T0_MS}"])
    assert assert_one_line(raised.value) == (
        f"InfluxDB at http://127.0.0.1:{refused_port}/energy is unreachable: connection refused"
    )
    assert raised.value.retryable


def test_a_server_that_does_not_answer_times_out(silent_port):
    target = InfluxTarget(host="127.0.0.1", port=silent_port, database="energy", timeout_s=0.3)
    with InfluxWriter(target) as writer, pytest.raises(InfluxUnreachable) as raised:
        writer.write([f"voltageL1,id=1 value=1.0 {T0_MS}"])
    assert assert_one_line(raised.value) == (
        f"InfluxDB at http://127.0.0.1:{silent_port}/energy: no answer to write within 0.3 s"
    )


@pytest.mark.parametrize(
    ("lines", "detail"),
    [
        ([f"voltageL1,id=1 value=abc {T0_MS}"], "unable to parse"),
        (
            [f"voltageL1,id=1 value=1.0 {T0_MS}", f"voltageL1,id=1 value=1i {T0_MS + 1}"],
            "field type conflict",
        ),
    ],
    ids=["unparsable", "field-type-conflict"],
)
def test_a_bad_point_is_a_bad_request_not_worth_retrying(influxd, influx_db, lines, detail):
    with (
        InfluxWriter(influxd.target(influx_db)) as writer,
        pytest.raises(InfluxBadRequest) as raised,
    ):
        writer.write(lines)
    message = assert_one_line(raised.value)
    assert message.startswith(
        f"InfluxDB at http://127.0.0.1:{influxd.port}/{influx_db} rejected the points on write (HTTP 400: "
    )
    assert detail in message
    assert not raised.value.retryable


def test_wrong_credentials_are_an_auth_error(influxd_auth):
    target = influxd_auth.target("energy", password="wrong")
    with InfluxWriter(target) as writer, pytest.raises(InfluxAuthError) as raised:
        writer.write([f"voltageL1,id=1 value=1.0 {T0_MS}"])
    assert assert_one_line(raised.value) == (
        f"InfluxDB at http://127.0.0.1:{influxd_auth.port}/energy refused the credentials of "
        "user 'admin' on write (HTTP 401: authorization failed)"
    )
    assert not raised.value.retryable


def test_a_user_who_may_not_create_the_database_is_told_so(influxd_auth):
    influxd_auth.create_user("pipeline_cannot_create", "secret")
    target = influxd_auth.target("not_there", username="pipeline_cannot_create", password="secret")
    with InfluxWriter(target) as writer, pytest.raises(InfluxDatabaseMissing) as raised:
        writer.write([f"voltageL1,id=1 value=1.0 {T0_MS}"])
    assert assert_one_line(raised.value) == (
        f"InfluxDB at http://127.0.0.1:{influxd_auth.port}/not_there: database 'not_there' does "
        "not exist and user 'pipeline_cannot_create' may not create it (needs admin privilege); "
        'create it as an admin (CREATE DATABASE "not_there") and grant the user WRITE on it'
    )


def test_a_read_only_user_is_denied(influxd_auth):
    client = influxd_auth.client()
    client.create_database("readonly_db")
    client.close()
    influxd_auth.create_user("grafana_reader", "secret", {"readonly_db": "READ"})
    target = influxd_auth.target("readonly_db", username="grafana_reader", password="secret")
    with InfluxWriter(target) as writer, pytest.raises(InfluxAuthError) as raised:
        writer.write([f"voltageL1,id=1 value=1.0 {T0_MS}"])
    assert "denied user 'grafana_reader' on write (HTTP 403" in assert_one_line(raised.value)


def test_a_least_privilege_writer_writes(influxd_auth):
    client = influxd_auth.client()
    client.create_database("pipeline_db")
    client.close()
    influxd_auth.create_user("pipeline", "secret", {"pipeline_db": "WRITE"})
    target = influxd_auth.target("pipeline_db", username="pipeline", password="secret")
    with InfluxWriter(target) as writer:
        writer.write([f"voltageL1,id=1 value=1.0 {T0_MS}"])
    assert influxd_auth.query('SELECT "value" FROM "voltageL1"', "pipeline_db") == [
        {"time": T0_MS, "value": 1.0, "name": "voltageL1"}
    ]


@pytest.fixture
def failing_http_server():
    """A loopback HTTP server answering every request with 503 (InfluxDB cannot produce a 5xx
    on demand)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"error":"engine: cache maximum memory size exceeded"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_a_server_error_is_retryable(failing_http_server):
    target = InfluxTarget(
        host="127.0.0.1", port=failing_http_server, database="energy", timeout_s=2
    )
    with InfluxWriter(target) as writer, pytest.raises(InfluxServerError) as raised:
        writer.write([f"voltageL1,id=1 value=1.0 {T0_MS}"])
    assert assert_one_line(raised.value) == (
        f"InfluxDB at http://127.0.0.1:{failing_http_server}/energy: server error on write: "
        "engine: cache maximum memory size exceeded"
    )
    assert raised.value.retryable


def test_the_password_never_shows():
    target = InfluxTarget(host="db", database="energy", username="pipeline", password="s3cret")
    assert "s3cret" not in repr(target)
    assert "s3cret" not in repr(InfluxWriter(target))

"""config/influxdb/initdb.d, run as the influxdb image runs it on its first start (sourced by
bash, each statement executed as the admin) against the real test influxd with auth on, then
used as the pipeline and Grafana use it:

- the pipeline's user writes readings and rollups and reads them back for the rollups (the
  image's WRITE alone cannot: the rollups SELECT), with its own writer and rollup code; it
  works with the raw readings' retention policy the init made, and has no admin rights (no
  database, user or retention policy; nothing on another database);
- Grafana's user reads and cannot write or delete.
"""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from influx_init import INIT_SCRIPTS, image_first_start, run_init_scripts
from influxdb.exceptions import InfluxDBClientError

from energymon_pipeline.influx import rollup
from energymon_pipeline.influx.writer import InfluxAuthError, InfluxWriter

RAW_POLICY = "energymon_raw"  # the pipeline's name for it (INFLUXDB_RAW_RETENTION)
# A recent hour: the raw readings' 90-day policy refuses older points.
HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


@pytest.fixture
def first_start(influxd_auth, tmp_path):
    suffix = uuid.uuid4().hex[:10]
    database = f"energymon_init_{suffix}"
    users = {"write": (f"writer_{suffix}", "w-secret"), "read": (f"reader_{suffix}", "r-secret")}
    admin = influxd_auth.client()
    image_first_start(admin, database, users)

    def start(**extra: str) -> list[str]:
        env = {"INFLUXDB_DB": database, "INFLUXDB_WRITE_USER": users["write"][0], **extra}
        return run_init_scripts(admin, env, tmp_path)

    yield start, database, users, influxd_auth
    admin.drop_database(database)
    for name, _ in users.values():
        admin.drop_user(name)
    admin.close()


def grants(server, user: str) -> set[tuple[str, str]]:
    return {(g["database"], g["privilege"]) for g in server.query(f'SHOW GRANTS FOR "{user}"')}


def test_scripts_are_valid_bash():
    assert INIT_SCRIPTS
    for script in INIT_SCRIPTS:
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=10)


def test_the_pipeline_user_reads_and_writes_its_database_only(first_start):
    start, database, users, server = first_start
    assert start() == [f'GRANT ALL ON "{database}" TO "{users["write"][0]}"']
    assert grants(server, users["write"][0]) == {(database, "ALL PRIVILEGES")}
    assert grants(server, users["read"][0]) == {(database, "READ")}
    admins = {u["user"] for u in server.query("SHOW USERS") if u["admin"]}
    assert not {users["write"][0], users["read"][0]} & admins
    policies = server.query(f'SHOW RETENTION POLICIES ON "{database}"')
    assert [p["name"] for p in policies] == ["autogen"]


def test_raw_retention_policy_is_created_when_configured(first_start):
    start, database, _, server = first_start
    start(INFLUXDB_RAW_RETENTION="90d")
    policies = {p["name"]: p for p in server.query(f'SHOW RETENTION POLICIES ON "{database}"')}
    assert policies["energymon_raw"]["duration"] == "2160h0m0s"
    assert policies["energymon_raw"]["default"] is False
    assert policies["autogen"]["default"] is True  # rollups and health points stay there


def as_user(server, database: str, user: tuple[str, str], policy: str | None = None):
    """The pipeline's own writer (and query path) logged in as `user`."""
    name, password = user
    target = server.target(database, username=name, password=password, retention_policy=policy)
    return InfluxWriter(target, create_database=False)


def readings(meter: str = "1") -> list[str]:
    """Two raw readings of a counter inside HOUR, as the poll writes them (ms)."""
    start = int(HOUR.timestamp() * 1000)
    return [
        f"importActiveEnergy,id={meter},description=hall,dataunit=kWh value=10.0 {start + 60_000}",
        f"importActiveEnergy,id={meter},description=hall,dataunit=kWh value=12.5 {start + 120_000}",
    ]


def refused(server, database: str | None, user: tuple[str, str], statement: str) -> str:
    client = server.client(database, *user)
    try:
        with pytest.raises(InfluxDBClientError) as error:
            client.query(statement, method="POST")
    finally:
        client.close()
    assert error.value.code == 403, statement
    return str(error.value)


def test_the_pipeline_user_writes_and_rolls_up_with_no_more_rights(first_start):
    start, database, users, server = first_start
    cumulative = {("1", "importActiveEnergy")}
    with as_user(server, database, users["write"]) as writer:
        writer.write(readings())
        # With the image's WRITE only, the rollups could not read what they aggregate.
        with pytest.raises(InfluxAuthError, match="denied"):
            rollup.hourly(writer, HOUR, HOUR + timedelta(hours=1), cumulative)
        start()
        result = rollup.hourly(writer, HOUR, HOUR + timedelta(hours=1), cumulative)
        assert (result.series, result.points_read, result.counters) == (1, 2, 1)
        writer.write(result.lines)
        [(_, _, [hourly])] = writer.query(f'SELECT * FROM "{rollup.HOURLY}"')
        assert hourly["consumption"] == 2.5

    writer_user = users["write"]
    for statement in (
        'CREATE DATABASE "energymon_elsewhere"',
        f'DROP DATABASE "{database}"',
        "CREATE USER intruder WITH PASSWORD 'x'",
        f'GRANT ALL ON "{database}" TO "{users["read"][0]}"',
        f'CREATE RETENTION POLICY "short" ON "{database}" DURATION 1h REPLICATION 1',
        f'DROP MEASUREMENT "{rollup.HOURLY}"',
        "SHOW USERS",
    ):
        refused(server, database, writer_user, statement)

    # Another database on the same server: neither written nor read.
    other = f"{database}_other"
    admin = server.client()
    admin.create_database(other)
    try:
        with as_user(server, other, writer_user) as elsewhere:
            with pytest.raises(InfluxAuthError):
                elsewhere.write(readings())
            with pytest.raises(InfluxAuthError):
                elsewhere.query("SELECT * FROM /.*/")
    finally:
        admin.drop_database(other)
        admin.close()


def test_grafana_s_user_reads_and_cannot_write(first_start):
    start, database, users, server = first_start
    start()
    with as_user(server, database, users["write"]) as writer:
        writer.write(readings())
    with as_user(server, database, users["read"]) as reader:
        [(_, _, rows)] = reader.query('SELECT "value" FROM "importActiveEnergy"')
        assert [row["value"] for row in rows] == [10.0, 12.5]
        with pytest.raises(InfluxAuthError, match="denied"):
            reader.write(readings("2"))
    for statement in (
        'DELETE FROM "importActiveEnergy"',
        'DROP SERIES FROM "importActiveEnergy"',
        'SELECT * INTO "copy" FROM "importActiveEnergy"',
        'CREATE DATABASE "energymon_elsewhere"',
    ):
        refused(server, database, users["read"], statement)
    assert len(server.query('SELECT * FROM "importActiveEnergy"', database)) == 2


def test_the_raw_policy_the_init_made_serves_a_writer_without_admin(first_start):
    start, database, users, server = first_start
    start(INFLUXDB_RAW_RETENTION="90d")
    with as_user(server, database, users["write"], policy=RAW_POLICY) as raw:
        raw.ensure_retention_policy(RAW_POLICY, "90d")  # what the pipeline does: a check
        raw.write(readings())
        with pytest.raises(InfluxAuthError, match="ALTER RETENTION POLICY"):
            raw.ensure_retention_policy(RAW_POLICY, "30d")  # changing it takes the admin
    assert len(server.query(f'SELECT * FROM "{RAW_POLICY}"."importActiveEnergy"', database)) == 2
    assert not server.query('SELECT * FROM "autogen"."importActiveEnergy"', database)
    with as_user(server, database, users["write"]) as writer:
        result = rollup.hourly(
            writer, HOUR, HOUR + timedelta(hours=1), set(), source_policy=RAW_POLICY
        )
    assert (result.series, result.points_read) == (1, 2)

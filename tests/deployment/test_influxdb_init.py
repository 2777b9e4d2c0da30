"""config/influxdb/initdb.d, run as the influxdb image runs it on its first start (sourced by
bash, each statement executed as the admin) against the real test influxd with auth on: the
pipeline's user may read and write its database and nothing else; the raw readings' retention
policy exists when INFLUXDB_RAW_RETENTION is set."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from influx_init import INIT_SCRIPTS, image_first_start, run_init_scripts


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

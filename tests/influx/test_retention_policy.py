"""The raw readings' retention policy on an InfluxDB with auth: a writer without admin rights
uses a policy an admin created (nothing sent), and gets the exact statement to run when it is
missing or has another duration."""

from __future__ import annotations

import uuid

import pytest

from energymon_pipeline.influx.writer import InfluxAuthError, InfluxWriter


def test_non_admin_writer_and_the_raw_policy(influxd_auth):
    database = f"energymon_rp_{uuid.uuid4().hex[:8]}"
    admin = influxd_auth.client()
    try:
        admin.create_database(database)
        influxd_auth.create_user("writer_" + database[-8:], "pw", {database: "ALL"})
        user = "writer_" + database[-8:]
        target = influxd_auth.target(database, username=user, password="pw")
        with InfluxWriter(target) as writer:
            with pytest.raises(InfluxAuthError) as missing:
                writer.ensure_retention_policy("energymon_raw", "90d")
            assert str(missing.value).endswith(
                f'as an admin run CREATE RETENTION POLICY "energymon_raw" ON "{database}" '
                "DURATION 90d REPLICATION 1"
            )
            admin.create_retention_policy("energymon_raw", "90d", 1, database=database)
            writer.ensure_retention_policy("energymon_raw", "2160h")  # same duration: no-op
            with pytest.raises(InfluxAuthError, match='ALTER RETENTION POLICY "energymon_raw"'):
                writer.ensure_retention_policy("energymon_raw", "30d")
        with InfluxWriter(influxd_auth.target(database)) as as_admin:
            as_admin.ensure_retention_policy("energymon_raw", "30d")
        durations = {p["name"]: p["duration"] for p in admin.get_list_retention_policies(database)}
        assert durations["energymon_raw"] == "720h0m0s"
    finally:
        admin.drop_database(database)
        admin.close()

"""Dagster resources: the registry database and the InfluxDB target with its spool.

Both are thin: they hold configuration (secrets through dg.EnvVar) and hand out the library
objects that do the work, so the library layers stay free of dagster.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from sqlalchemy.engine import Engine

from energymon_pipeline.influx.spool import Spool
from energymon_pipeline.influx.writer import InfluxTarget, InfluxWriter
from energymon_pipeline.registry import db

_ENGINES: dict[str, Engine] = {}
_ENSURED_POLICIES: set[tuple] = set()
RAW_RETENTION_POLICY = "energymon_raw"


class RegistryResource(dg.ConfigurableResource):
    """The meter/register registry. Empty `database_url` means the environment's choice
    (ENERGYMON_DATABASE_URL, POSTGRES_*, or the embedded SQLite file)."""

    database_url: str = ""

    def engine(self) -> Engine:
        """One pooled engine per URL and process: poll runs every minute reuse connections."""
        key = self.database_url
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = db.create_engine(self.database_url or None)
        return engine


class InfluxResource(dg.ConfigurableResource):
    """InfluxDB 1.x and the on-disk spool every batch passes through."""

    host: str = "localhost"
    port: int = 8086
    database: str = "influx_default"
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0
    spool_dir: str = ".energymon/spool"
    spool_max_bytes: int = 512 * 1024**2
    spool_max_age_s: int = 30 * 86400
    #: Duration of the `energymon_raw` retention policy for raw readings; "" = none.
    raw_retention: str = ""

    def target(self, retention_policy: str | None = None) -> InfluxTarget:
        return InfluxTarget(
            host=self.host,
            port=self.port,
            database=self.database,
            username=self.username,
            password=self.password,
            timeout_s=self.timeout_s,
            retention_policy=retention_policy,
        )

    def writer(self) -> InfluxWriter:
        return InfluxWriter(self.target())

    def spool(self) -> Spool:
        return Spool(Path(self.spool_dir), self.spool_max_bytes, self.spool_max_age_s)

    @property
    def raw_policy(self) -> str | None:
        """The retention policy raw readings are written to (None: the default policy)."""
        return RAW_RETENTION_POLICY if self.raw_retention else None

    def raw_writer(self) -> InfluxWriter:
        """The writer for raw readings; creates or updates their retention policy once per
        process ("created on start")."""
        writer = InfluxWriter(self.target(self.raw_policy))
        key = (self.host, self.port, self.database, self.raw_retention)
        if self.raw_retention and key not in _ENSURED_POLICIES:
            writer.ensure_retention_policy(RAW_RETENTION_POLICY, self.raw_retention)
            _ENSURED_POLICIES.add(key)
        return writer

    def raw_spool(self) -> Spool:
        """Raw readings bound for their own retention policy queue in a folder of their own."""
        if not self.raw_retention:
            return self.spool()
        return Spool(Path(self.spool_dir) / "raw", self.spool_max_bytes, self.spool_max_age_s)

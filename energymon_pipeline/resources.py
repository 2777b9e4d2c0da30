"""Dagster resources: the registry database and the InfluxDB target with its spool.

Both are thin: they hold configuration (secrets through dg.EnvVar) and hand out the library
objects that do the work, so the library layers stay free of dagster.
"""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr
from sqlalchemy.engine import Engine

from energymon_pipeline import settings
from energymon_pipeline.influx.write_path import RAW_RETENTION_POLICY, WritePath
from energymon_pipeline.influx.writer import InfluxTarget, InfluxWriter
from energymon_pipeline.registry import db


class RegistryResource(dg.ConfigurableResource):
    """The meter/register registry. Empty `database_url` means the environment's choice
    (POSTGRES_*, or the embedded SQLite file). A URL usually holds a password: definitions.py
    passes ENERGYMON_DATABASE_URL as a `dg.EnvVar`, so the UI and the run history show the
    variable's name, never its value."""

    database_url: str = ""

    _engine: Engine | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """One pooled engine for the run (or sensor tick): its ops share the connections."""
        url = (
            settings.registry_url(self.database_url)
            if self.database_url
            else settings.database_url()
        )
        self._engine = db.create_engine(url)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Closes the engine's connections when the run or tick ends: the code server
        evaluates a sensor tick after tick in one long-lived process."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError(
                "RegistryResource has no engine outside a run or tick; build it with "
                "dg.build_resources(...) or pass it to a run, sensor or schedule context"
            )
        return self._engine


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

    def write_path(self) -> WritePath:
        """The spool(s) in front of this database (see influx/write_path.py)."""
        return WritePath(
            self.target(),
            self.spool_dir,
            self.spool_max_bytes,
            self.spool_max_age_s,
            self.raw_retention or None,
        )

    @property
    def raw_policy(self) -> str | None:
        """The retention policy raw readings are written to (None: the default policy)."""
        return RAW_RETENTION_POLICY if self.raw_retention else None

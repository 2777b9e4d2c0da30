"""Dagster resources: the registry database and the InfluxDB target with its spool.

Both are thin: they hold configuration (secrets through dg.EnvVar) and hand out the library
objects that do the work, so the library layers stay free of dagster.
"""

from __future__ import annotations

import dagster as dg
from sqlalchemy.engine import Engine

from energymon_pipeline.registry import db

_ENGINES: dict[str, Engine] = {}


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

"""What the commands work on, as the environment configures it (settings.py): the library
layers take their database and InfluxDB from their caller and never read settings."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from energymon_pipeline import settings
from energymon_pipeline.registry import db


def registry_engine() -> Engine:
    """The configured registry (ENERGYMON_DATABASE_URL, POSTGRES_*, or the SQLite default)."""
    return db.create_engine(settings.database_url())


def write_path():
    """The configured spool(s) in front of the configured InfluxDB (a WritePath)."""
    from energymon_pipeline.influx.write_path import WritePath  # the InfluxDB client: on use

    return WritePath.from_settings(settings.influx(), settings.spool())

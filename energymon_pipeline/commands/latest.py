"""`energymon latest`: the newest value of each measurement per meter, read from InfluxDB, so
the data `make run` lands can be seen without Grafana."""

from __future__ import annotations

import json

import click

from energymon_pipeline.commands.output import print_table
from energymon_pipeline.errors import EnergymonError

COLUMNS = [
    ("meter_id", "METER"),
    ("description", "DESCRIPTION"),
    ("measurement", "MEASUREMENT"),
    ("value", "VALUE"),
    ("unit", "UNIT"),
    ("time", "TIME (UTC)"),
]


@click.command("latest")
@click.option("--meter", "meter_id", type=int, default=None, metavar="ID", help="Only meter ID.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def latest(meter_id: int | None, as_json: bool) -> None:
    """The newest value of each measurement per meter, read from InfluxDB.

    InfluxDB is INFLUXDB_HOSTNAME:INFLUXDB_PORT, database INFLUXDB_DB (as the pipeline writes
    it); raw readings are looked up in the `energymon_raw` retention policy too when
    INFLUXDB_RAW_RETENTION is set. Times are UTC."""
    from energymon_pipeline import settings
    from energymon_pipeline.influx.latest import latest_readings
    from energymon_pipeline.influx.write_path import RAW_RETENTION_POLICY
    from energymon_pipeline.influx.writer import InfluxTarget, InfluxWriter

    influx = settings.influx()
    target = InfluxTarget.from_settings(influx)
    policies = [None, RAW_RETENTION_POLICY] if influx.raw_retention else [None]
    with InfluxWriter(target, create_database=False) as writer:
        readings = latest_readings(writer, policies)

    if meter_id is not None:
        selected = [r for r in readings if r.meter_id == meter_id]
        if not selected:
            known = sorted({str(r.meter_id) for r in readings if r.meter_id is not None})
            others = f"; meters with readings: {', '.join(known)}" if known else ""
            raise EnergymonError(
                f"meter {meter_id} has no readings in InfluxDB at {target.where}{others}"
            )
        readings = selected

    if as_json:
        click.echo(json.dumps([r.as_dict() for r in readings], indent=2))
    elif not readings:
        click.echo(
            f"no readings in InfluxDB at {target.where} yet (poll runs write them: under "
            "`make run` every minute)"
        )
    else:
        print_table([r.as_dict() for r in readings], COLUMNS)

"""`energymon spool`: the write-ahead spool(s) of batches waiting for InfluxDB, shown and
flushed through the same write path the poll job uses."""

from __future__ import annotations

import json

import click

from energymon_pipeline.commands.configured import write_path
from energymon_pipeline.commands.errors import UserErrorGroup
from energymon_pipeline.errors import EnergymonError


@click.group(cls=UserErrorGroup)
def spool() -> None:
    """The write-ahead spool: batches waiting for InfluxDB."""


@spool.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def spool_status(as_json: bool) -> None:
    """How much is waiting, and since when (every spool: with INFLUXDB_RAW_RETENTION, raw
    readings wait in a spool of their own)."""
    infos = []
    for queue, status in write_path().status():
        infos.append(
            {
                "path": str(queue.path),
                "batches": status.batches,
                "points": status.points,
                "bytes": status.bytes,
                "oldest_age_s": None
                if status.oldest_age_s is None
                else round(status.oldest_age_s, 1),
                "rejected_batches": status.rejected_batches,
                "rejected_path": str(queue.rejected_path),
            }
        )
    if as_json:
        click.echo(json.dumps(infos[0] if len(infos) == 1 else infos, indent=2))
        return
    for info in infos:
        age = "" if info["oldest_age_s"] is None else f", oldest {info['oldest_age_s']} s old"
        where = f"{info['path']}: " if len(infos) > 1 else ""
        click.echo(
            f"{where}{info['batches']} batch(es), {info['points']} point(s), "
            f"{info['bytes']} bytes{age}"
        )
        if info["rejected_batches"]:
            click.echo(
                f"{info['rejected_batches']} batch(es) that can never be sent are kept in "
                f"{info['rejected_path']}",
                err=True,
            )


@spool.command("flush")
def spool_flush() -> None:
    """Send every waiting batch to InfluxDB now, oldest first."""
    result = write_path().flush()
    for line in [*map(str, result.losses), *result.rejected]:
        click.echo(f"warning: {line}", err=True)
    click.echo(
        f"sent {result.sent_batches} batch(es), {result.sent_points} point(s); "
        f"{result.backlog_batches} batch(es) still waiting"
    )
    if result.error is not None:
        raise EnergymonError(str(result.error))

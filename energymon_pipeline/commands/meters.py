"""`energymon meters`: the rows of energy_meters, listed, added, removed, switched on and off."""

from __future__ import annotations

from typing import Any

import click

from energymon_pipeline.commands.configured import registry_engine
from energymon_pipeline.commands.errors import UserErrorGroup
from energymon_pipeline.commands.output import print_json, print_table
from energymon_pipeline.registry import queries

METER_COLUMNS = [
    ("id", "ID"),
    ("host", "HOST"),
    ("port", "PORT"),
    ("slave_address", "UNIT"),
    ("type", "TYPE"),
    ("description", "DESCRIPTION"),
    ("enabled", "ENABLED"),
    ("poll_group", "GROUP"),
    ("status", "LAST CHECK"),
]


@click.group(cls=UserErrorGroup)
def meters() -> None:
    """Meters (rows of energy_meters)."""


@meters.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def meters_list(as_json: bool) -> None:
    """List every meter."""
    rows = queries.list_meters(registry_engine())
    if as_json:
        print_json(rows)
    else:
        for row in rows:
            row["enabled"] = "yes" if row["enabled"] else "no"
            row["status"] = _status_text(row)
        print_table(rows, METER_COLUMNS)


def _status_text(row: dict[str, Any]) -> str:
    if row.get("status_result") is None:
        return "never checked"
    checked = row["status_checked_at"].strftime("%Y-%m-%d %H:%M:%S")
    latency = row.get("status_latency_ms")
    latency_text = f", {latency:.1f} ms" if latency is not None else ""
    return f"{row['status_result']}{latency_text} at {checked} UTC"


@meters.command("add")
@click.option("--host", required=True, help="Hostname or IP address of the meter or gateway.")
@click.option("--port", required=True, type=int, help="TCP port, 1-65535 (usually 502).")
@click.option("--unit", required=True, type=int, help="Modbus unit id (slave address), 0-255.")
@click.option("--type", "type_", required=True, help="Meter type; joins to registers.type.")
@click.option("--description", default=None, help="Free text; becomes the InfluxDB tag.")
@click.option("--id", "meter_id", type=int, default=None, help="Explicit id (default: next free).")
@click.option(
    "--framer",
    type=click.Choice(["socket", "rtu"]),
    default="socket",
    help="socket (Modbus TCP) or rtu (RTU over TCP gateways).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=None,
    help="Per-request timeout in seconds (default 3).",
)
@click.option(
    "--group",
    "poll_group",
    default=None,
    help="Poll group (see ENERGYMON_POLL_GROUPS); default: no group.",
)
def meters_add(
    host, port, unit, type_, description, meter_id, framer, timeout_s, poll_group
) -> None:
    """Add a meter; it is polled from the next poll run on."""
    result = queries.add_meter(
        registry_engine(),
        {
            "id": meter_id,
            "host": host,
            "port": port,
            "slave_address": unit,
            "type": type_,
            "description": description,
            "framer": framer,
            "timeout_s": timeout_s,
            "poll_group": poll_group,
        },
    )
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"added meter {result.ids[0]}")


@meters.command("remove")
@click.argument("meter_id", type=int)
def meters_remove(meter_id: int) -> None:
    """Delete a meter (its registers stay: they belong to its type)."""
    queries.remove_meter(registry_engine(), meter_id)
    click.echo(f"removed meter {meter_id}")


@meters.command("disable")
@click.argument("meter_id", type=int)
def meters_disable(meter_id: int) -> None:
    """Stop polling a meter without deleting it."""
    changed = queries.set_meter_enabled(registry_engine(), meter_id, False)
    click.echo(f"meter {meter_id} {'disabled' if changed else 'was already disabled'}")


@meters.command("enable")
@click.argument("meter_id", type=int)
def meters_enable(meter_id: int) -> None:
    """Poll a disabled meter again."""
    changed = queries.set_meter_enabled(registry_engine(), meter_id, True)
    click.echo(f"meter {meter_id} {'enabled' if changed else 'was already enabled'}")

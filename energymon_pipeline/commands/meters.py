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
    ("link", "LINK"),
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
    links = queries.link_settings(rows)
    if as_json:
        print_json(rows)
    else:
        for row in rows:
            row["enabled"] = "yes" if row["enabled"] else "no"
            row["poll_group"] = queries.poll_group(row)
            row["link"] = _link_settings_text(links[queries.link_key(row)])
            row["status"] = _status_text(row)
        print_table(rows, METER_COLUMNS)


def _link_text(row: dict[str, Any]) -> str:
    """Where the meter is reached: its serial port, or host:port (RTU framing named)."""
    if row.get("serial_port"):
        return row["serial_port"]
    return f"{row['host']}:{row['port']}" + (" rtu" if row.get("framer") == "rtu" else "")


def _link_settings_text(row: dict[str, Any]) -> str:
    """A link's settings (queries.link_settings): connections, pause between requests, pause
    after connecting; a serial port's line first (9600 8N1)."""
    settings = (
        f"{row.get('max_connections') or 1} conn, {row.get('inter_request_delay_ms') or 0} ms "
        f"gap, {row.get('connect_delay_s') or 0:g} s pause"
    )
    if row.get("serial_port"):
        line = (
            f"{row.get('baudrate') or 9600} "
            f"{row.get('bytesize') or 8}{row.get('parity') or 'N'}{row.get('stopbits') or 1}"
        )
        settings = f"{line}; {settings}"
    return settings


def _status_text(row: dict[str, Any]) -> str:
    if row.get("status_result") is None:
        return "never checked"
    checked = row["status_checked_at"].strftime("%Y-%m-%d %H:%M:%S")
    latency = row.get("status_latency_ms")
    latency_text = f", {latency:.1f} ms" if latency is not None else ""
    return f"{row['status_result']}{latency_text} at {checked} UTC"


def link_options(function):
    """The link settings, for `meters add` and `meters link`."""
    for option in reversed(
        [
            click.option(
                "--max-connections",
                type=int,
                default=None,
                help="Connections a poll opens to the link at once, 1-64 (default 1; many "
                "gateways accept only 1 to 4).",
            ),
            click.option(
                "--inter-request-delay-ms",
                type=int,
                default=None,
                help="Pause between requests on one connection of the link, 0-60000 ms "
                "(default 0; some gateways and meters need 20-100).",
            ),
            click.option(
                "--connect-delay-s",
                type=float,
                default=None,
                help="Pause after connecting before the first request, 0-60 s (default 0).",
            ),
        ]
    ):
        function = option(function)
    return function


@meters.command("add")
@click.option("--host", default=None, help="Hostname or IP address of the meter or gateway.")
@click.option("--port", type=int, default=None, help="TCP port, 1-65535 (usually 502).")
@click.option(
    "--serial",
    "serial_port",
    default=None,
    help="Serial device path for Modbus RTU on a local port, e.g. /dev/ttyUSB0 (instead of "
    "--host/--port).",
)
@click.option("--baudrate", type=int, default=None, help="Serial speed (default 9600).")
@click.option(
    "--parity",
    type=click.Choice(["N", "E", "O"], case_sensitive=False),
    default=None,
    help="Serial parity: N none, E even, O odd (default N).",
)
@click.option("--stopbits", type=int, default=None, help="Serial stop bits, 1 or 2 (default 1).")
@click.option("--bytesize", type=int, default=None, help="Serial data bits, 7 or 8 (default 8).")
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
@link_options
def meters_add(
    host, port, serial_port, baudrate, parity, stopbits, bytesize, unit, type_, description,
    meter_id, framer, timeout_s, poll_group, max_connections, inter_request_delay_ms,
    connect_delay_s,
) -> None:  # fmt: skip
    """Add a meter; it is polled from the next poll run on.

    A Modbus TCP meter (or a gateway's unit) needs --host and --port; a meter on a local
    serial port needs --serial and its line settings instead."""
    fields: dict[str, Any] = {
        "id": meter_id,
        "slave_address": unit,
        "type": type_,
        "description": description,
        "framer": framer,
        "timeout_s": timeout_s,
        "poll_group": poll_group,
        "max_connections": max_connections,
        "inter_request_delay_ms": inter_request_delay_ms,
        "connect_delay_s": connect_delay_s,
    }
    serial = {"baudrate": baudrate, "parity": parity, "stopbits": stopbits, "bytesize": bytesize}
    if serial_port is not None:
        if host is not None or port is not None:
            raise click.UsageError("--serial replaces --host and --port: give one or the other")
        # host repeats the path for listings (the column is NOT NULL in the original schema).
        host = serial_port if len(serial_port) <= 64 else "serial"
        fields.update(serial, serial_port=serial_port, host=host, port=0, framer="rtu")
    else:
        given = [f"--{name}" for name, value in serial.items() if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} only apply with --serial")
        if host is None or port is None:
            raise click.UsageError("give --host and --port (Modbus TCP), or --serial PATH")
        fields.update(host=host, port=port)
    result = queries.add_meter(registry_engine(), fields)
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


@meters.command("link")
@click.argument("meter_id", type=int)
@link_options
def meters_link(meter_id, max_connections, inter_request_delay_ms, connect_delay_s) -> None:
    """Show or set the settings of a meter's link (its gateway or serial port), on every
    meter of that link at once."""
    ids = queries.set_link(
        registry_engine(),
        meter_id,
        {
            "max_connections": max_connections,
            "inter_request_delay_ms": inter_request_delay_ms,
            "connect_delay_s": connect_delay_s,
        },
    )
    rows = queries.list_meters(registry_engine())
    [row] = [r for r in rows if r["id"] == meter_id]
    settings = queries.link_settings(rows)[queries.link_key(row)]
    meters_text = ", ".join(str(i) for i in ids)
    click.echo(f"link {_link_text(row)} (meters {meters_text}): {_link_settings_text(settings)}")


@meters.command("group")
@click.argument("meter_id", type=int)
@click.argument("group")
@click.option(
    "--whole-link",
    is_flag=True,
    help="Move every meter of the meter's link (its gateway or serial port) with it.",
)
def meters_group(meter_id: int, group: str, whole_link: bool) -> None:
    """Put a meter into poll GROUP (`default`: no group). A link's meters share one group, so
    a meter that shares its link is moved with --whole-link."""
    ids = queries.set_group(registry_engine(), meter_id, group, whole_link)
    click.echo(f"meter(s) {', '.join(map(str, ids))} now in poll group {group!r}")

"""`energymon discover`: which unit ids answer on a gateway, device or serial bus, and what
each is (SunSpec, a shipped profile, or unknown); with --add, the identified ones become
meters. The identification is devices/identify.py's, shared with the connectivity check of
`auto` meters."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from energymon_pipeline.commands.errors import EXIT_USER_ERROR
from energymon_pipeline.commands.output import print_table
from energymon_pipeline.commands.read import serial_options
from energymon_pipeline.errors import EnergymonError
from energymon_pipeline.modbus.types import Endpoint, SerialLine

#: Unit ids a scan may ask: 0 (some TCP devices answer only there) to 247 (the highest
#: Modbus serial address; 248-255 are reserved).
UNIT_MIN, UNIT_MAX = 0, 247
DEFAULT_TIMEOUT_S = 0.5
#: An answering unit is identified within this many request timeouts.
UNIT_TIME_TIMEOUTS = 20
DEFAULT_MAX_TIME_S = 600.0


def parse_units(text: str) -> list[int]:
    """'1-10,20,30-32' -> the unit ids, in the order given, each once. EnergymonError (one
    line, naming what is allowed) for anything else."""
    allowed = (
        f"allowed: unit ids {UNIT_MIN}-{UNIT_MAX} as a comma-separated list of ids and "
        "ranges, e.g. 1-247 or 1,2,10-20"
    )
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise EnergymonError(
                f"--units {text!r}: {part!r} is not a unit id or range; {allowed}"
            ) from None
        if not (UNIT_MIN <= first <= UNIT_MAX and UNIT_MIN <= last <= UNIT_MAX):
            raise EnergymonError(f"--units {text!r}: {part!r} is out of range; {allowed}")
        if last < first:
            raise EnergymonError(f"--units {text!r}: {part!r} runs backwards; {allowed}")
        units.extend(u for u in range(first, last + 1) if u not in units)
    return units


def ranges_text(units: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts: list[str] = []
    for unit in sorted(units):
        if parts and unit == int(parts[-1].rpartition("-")[2]) + 1:
            parts[-1] = f"{parts[-1].partition('-')[0]}-{unit}"
        else:
            parts.append(str(unit))
    return ", ".join(parts)


def _meter_fields(
    endpoint: Endpoint, unit: int, type_: str, description: str | None, poll_group: str | None
) -> dict:
    """The `energy_meters` row of a found unit, as `meters add` builds it."""
    fields: dict[str, Any] = {
        "slave_address": unit,
        "type": type_,
        "description": description,
        "poll_group": poll_group,
    }
    line = endpoint.serial
    if line is not None:
        fields.update(
            serial_port=line.port,
            host=line.port if len(line.port) <= 64 else "serial",
            port=0,
            framer="rtu",
            baudrate=line.baudrate,
            parity=line.parity,
            stopbits=line.stopbits,
            bytesize=line.bytesize,
        )
    else:
        fields.update(host=endpoint.host, port=endpoint.port, framer=endpoint.framer)
    if endpoint.inter_request_delay_s:
        fields["inter_request_delay_ms"] = round(endpoint.inter_request_delay_s * 1000)
    return fields


def add_found(
    endpoint: Endpoint, found: list, type_prefix: str, poll_group: str | None, echo
) -> int:
    """Add each identified unit as a meter (see `discover --help`); returns how many could
    not be added (duplicates, refused rows). `echo(line)` prints what was done."""
    from energymon_pipeline.commands.configured import registry_engine
    from energymon_pipeline.devices.identify import import_profile_if_missing
    from energymon_pipeline.devices.sunspec import SUNSPEC_TYPE
    from energymon_pipeline.devices.sunspec_store import layout_endpoint, save_layout
    from energymon_pipeline.registry import queries

    engine = registry_engine()
    existing = {
        (queries.link_key(row), row["slave_address"]): row["id"]
        for row in queries.list_meters(engine)
    }
    failed = 0
    try:
        for item in found:
            if not item.identified:
                click.echo(
                    f"unit {item.unit}: not added: answers, but was not identified (add it "
                    "with `energymon meters add` and a type of your own)",
                    err=True,
                )
                continue
            description = (item.device_name or item.identified_as)[:64]
            if item.sunspec is not None:
                type_ = SUNSPEC_TYPE
            else:
                type_ = f"{type_prefix}{item.identified_as}"
            fields = _meter_fields(endpoint, item.unit, type_, description, poll_group)
            key = (queries.link_key(fields), item.unit)
            if key in existing:
                click.echo(
                    f"error: unit {item.unit}: not added: meter {existing[key]} already is "
                    f"{endpoint.link_name} unit {item.unit}",
                    err=True,
                )
                failed += 1
                continue
            try:
                note = ""
                if item.profile is not None:
                    note = "; " + import_profile_if_missing(
                        engine, item.identified_as, type_ if type_prefix else None
                    )
                result = queries.add_meter(engine, fields)
            except EnergymonError as error:
                click.echo(f"error: unit {item.unit}: not added: {error}", err=True)
                failed += 1
                continue
            [meter_id] = result.ids
            existing[key] = meter_id
            if item.sunspec is not None:
                save_layout(engine, meter_id, layout_endpoint(fields), item.sunspec)
                note = "; SunSpec layout stored"
            echo(f"added meter {meter_id}: unit {item.unit} as type {type_!r}{note}")
    finally:
        engine.dispose()
    return failed


@click.command("discover")
@click.argument("host", required=False)
@click.option("--port", type=click.IntRange(1, 65535), default=502, show_default=True)
@click.option(
    "--framer",
    type=click.Choice(["socket", "rtu"]),
    default="socket",
    show_default=True,
    help="socket (Modbus TCP) or rtu (RTU over TCP gateways).",
)
@serial_options("HOST")
@click.option(
    "--units",
    "units_text",
    default="1-247",
    show_default=True,
    help=f"Unit ids to ask, {UNIT_MIN}-{UNIT_MAX}: a comma-separated list of ids and ranges "
    "(1-10,20).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.05, 10),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for one answer; a unit that does not answer costs this once.",
)
@click.option(
    "--max-time",
    "max_time_s",
    type=click.FloatRange(1, 86400),
    default=DEFAULT_MAX_TIME_S,
    show_default=True,
    help="Seconds the whole scan may take; units it does not reach are named as not scanned.",
)
@click.option(
    "--inter-request-delay-ms",
    type=click.IntRange(0, 60000),
    default=0,
    show_default=True,
    help="Pause between requests (some gateways and meters need 20-100 ms).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--add",
    is_flag=True,
    help="Add each identified unit to the registry as a meter (type sunspec with its layout, "
    "or the matched profile's type, importing the profile when that type has no registers).",
)
@click.option(
    "--type-prefix",
    default="",
    help="With --add: a profile-identified meter gets type PREFIX+profile, and the profile is "
    "imported under that type (keeps the rows apart from a hand-edited type of the same name).",
)
@click.option(
    "--group",
    "poll_group",
    default=None,
    help="With --add: the new meters' poll group (see ENERGYMON_POLL_GROUPS); default: no "
    "group. A link's meters are all in one group.",
)
def discover(host, port, framer, serial_port, baudrate, parity, stopbits, bytesize, units_text,
             timeout_s, max_time_s, inter_request_delay_ms, as_json, add, type_prefix,
             poll_group) -> None:  # fmt: skip
    """Scan unit ids on HOST (a device or gateway) or a serial bus, and say what answers.

    Each unit is asked one request at a time: a first read at holding register 40000 (any
    answer, a Modbus exception too, means it is there; exceptions 10/11 are a gateway saying
    nobody is), then SunSpec discovery, then the shipped profiles' signatures. A unit that does
    not answer costs one --timeout and is not listed; one that answers is identified within
    20 x --timeout; the whole scan ends within --max-time (default 600 s; 247 silent units at
    the default 0.5 s take about 2 minutes). It stops early only when the link itself fails.

    Exits 1 when the link failed, the scan ran out of time, or --add could not add a unit."""
    from energymon_pipeline.devices.identify import scan
    from energymon_pipeline.modbus.client import ModbusConnection

    if (host is None) == (serial_port is None):
        raise click.UsageError("give HOST (Modbus TCP) or --serial PATH (Modbus RTU), not both")
    if not add and (type_prefix or poll_group is not None):
        raise click.UsageError("--type-prefix and --group only apply with --add")
    units = parse_units(units_text)
    line = None
    if serial_port is not None:
        line = SerialLine(serial_port, baudrate, parity.upper(), int(stopbits), int(bytesize))
        host, port, framer = serial_port, 0, "rtu"
    endpoint = Endpoint(
        host,
        port,
        0,
        framer=framer,
        timeout_s=timeout_s,
        retries=0,
        serial=line,
        inter_request_delay_s=inter_request_delay_ms / 1000,
    )
    click.echo(
        f"scanning {len(units)} unit id(s) on {endpoint.link_name} ({ranges_text(units)}): "
        f"{timeout_s:g} s per silent unit, at most {max_time_s:g} s in all",
        err=True,
    )

    async def run():
        connection = ModbusConnection(endpoint)
        try:
            return await scan(connection, units, UNIT_TIME_TIMEOUTS * timeout_s, max_time_s)
        finally:
            connection.close()

    result = asyncio.run(run())
    if as_json:
        click.echo(json.dumps([item.as_dict() for item in result.found], indent=2))
    elif result.found:
        rows = [
            {"unit": i.unit, "identified_as": i.identified_as, "details": i.details()}
            for i in result.found
        ]
        print_table(rows, [("unit", "UNIT"), ("identified_as", "IDENTIFIED AS"),
                           ("details", "DETAILS")])  # fmt: skip
    identified = sum(1 for i in result.found if i.identified)
    click.echo(
        f"scanned {len(result.scanned)} unit id(s) on {endpoint.link_name} in "
        f"{result.elapsed_s:.1f} s: {len(result.found)} answered ({identified} identified, "
        f"{len(result.found) - identified} unknown)",
        err=True,
    )
    if result.garbled:
        click.echo(
            f"warning: unit id(s) {ranges_text(result.garbled)} answered with something that "
            f"is not a Modbus answer ({result.garbled_error}): another protocol on the port, "
            "or an RTU-over-TCP gateway (--framer rtu) addressed as Modbus TCP, or the reverse",
            err=True,
        )
    failed = False
    if result.link_error is not None:
        click.echo(
            f"error: {endpoint.link_name}: {result.link_error}; scan stopped, unit id(s) "
            f"{ranges_text(result.not_scanned)} not scanned",
            err=True,
        )
        failed = True
    elif result.not_scanned:
        click.echo(
            f"error: --max-time {max_time_s:g} s ran out: unit id(s) "
            f"{ranges_text(result.not_scanned)} not scanned (narrow --units, or allow more time)",
            err=True,
        )
        failed = True
    if add and result.found:
        echo = (lambda text: click.echo(text, err=True)) if as_json else click.echo
        if add_found(endpoint, result.found, type_prefix, poll_group, echo):
            failed = True
    if failed:
        sys.exit(EXIT_USER_ERROR)

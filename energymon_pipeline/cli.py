"""The `energymon` command: registry administration and ad-hoc checks from a shell.

User errors print one line on stderr and exit 1; usage errors exit 2 (click's convention).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import click

from energymon_pipeline.commands.errors import EXIT_USER_ERROR, UserErrorGroup
from energymon_pipeline.errors import EnergymonError
from energymon_pipeline.modbus.types import (
    DataType,
    Endpoint,
    FunctionCode,
    MeterSpec,
    Order,
    PlanOptions,
    RegisterSpec,
)
from energymon_pipeline.registry import db, queries
from energymon_pipeline.registry.csv_import import read_registers_csv
from energymon_pipeline.registry.definitions import load_definitions


def _engine():
    return db.create_engine()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _print_json(rows: list[dict[str, Any]]) -> None:
    click.echo(json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in rows], indent=2))


def _print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    """A plain aligned table: `columns` pairs a row key with its heading."""
    cells = [[heading for _, heading in columns]]
    for row in rows:
        cells.append(["" if row.get(key) is None else str(row.get(key)) for key, _ in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


@click.group(cls=UserErrorGroup)
def cli() -> None:
    """energymon: Modbus TCP energy meter monitoring (registry and tools).

    The registry database is ENERGYMON_DATABASE_URL if set, else PostgreSQL from
    POSTGRES_HOST/PORT/USER/PASSWORD/DB if POSTGRES_HOST is set, else an SQLite file in the
    local data folder (ENERGYMON_DATA_DIR, default .energymon).
    """


@cli.group(cls=UserErrorGroup, name="db")
def db_group() -> None:
    """The registry database schema."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Create the registry, adopt the original system's tables, or apply new migrations.

    Running it again when the schema is current changes nothing."""
    engine = _engine()
    applied = db.upgrade(engine)
    target = db.describe(engine)
    if applied:
        click.echo(f"registry {target}: applied migration(s) {', '.join(applied)}")
    else:
        click.echo(f"registry {target}: already up to date ({db.current_revision(engine)})")
    # Rows written past validation (the original system, a SQL client) are kept as they are;
    # polls skip them, and this says which and why.
    for problem in load_definitions(engine, include_disabled=True).problems:
        click.echo(f"warning: {problem}", err=True)


@cli.group(cls=UserErrorGroup)
def meters() -> None:
    """Meters (rows of energy_meters)."""


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


@meters.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def meters_list(as_json: bool) -> None:
    """List every meter."""
    rows = queries.list_meters(_engine())
    if as_json:
        _print_json(rows)
    else:
        for row in rows:
            row["enabled"] = "yes" if row["enabled"] else "no"
            row["status"] = _status_text(row)
        _print_table(rows, METER_COLUMNS)


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
        _engine(),
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
    queries.remove_meter(_engine(), meter_id)
    click.echo(f"removed meter {meter_id}")


@meters.command("disable")
@click.argument("meter_id", type=int)
def meters_disable(meter_id: int) -> None:
    """Stop polling a meter without deleting it."""
    changed = queries.set_meter_enabled(_engine(), meter_id, False)
    click.echo(f"meter {meter_id} {'disabled' if changed else 'was already disabled'}")


@meters.command("enable")
@click.argument("meter_id", type=int)
def meters_enable(meter_id: int) -> None:
    """Poll a disabled meter again."""
    changed = queries.set_meter_enabled(_engine(), meter_id, True)
    click.echo(f"meter {meter_id} {'enabled' if changed else 'was already enabled'}")


@cli.group(cls=UserErrorGroup)
def registers() -> None:
    """Register maps (rows of registers, per meter type)."""


REGISTER_COLUMNS = [
    ("id", "ID"),
    ("type", "TYPE"),
    ("function_code", "FC"),
    ("register_address", "ADDRESS"),
    ("measurement_name", "MEASUREMENT"),
    ("data_unit", "UNIT"),
    ("data_type", "DATA_TYPE"),
    ("word_order", "WORD_ORDER"),
    ("byte_order", "BYTE_ORDER"),
    ("scale", "SCALE"),
    ("offset", "OFFSET"),
]


@registers.command("list")
@click.option("--type", "type_", default=None, help="Only registers of this meter type.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def registers_list(type_: str | None, as_json: bool) -> None:
    """List register definitions (addresses are zero-based protocol addresses)."""
    rows = queries.list_registers(_engine(), type_)
    if as_json:
        _print_json(rows)
    else:
        _print_table(rows, REGISTER_COLUMNS)


@registers.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
def registers_import(file: str) -> None:
    """Import register rows from a CSV with the original header, all or nothing.

    Header: type,register_address,measurement_name,data_unit,data_type,function_code,
    word_order,byte_order (optional: scale,offset,min_value,max_value)."""
    rows, problems = read_registers_csv(file)
    result = queries.insert_registers(_engine(), rows, known_problems=problems)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"imported {len(result.ids)} register row(s) from {file}")


def _result_rows(result) -> list[dict[str, Any]]:
    rows = [
        {
            "measurement": r.register.measurement,
            "value": r.value,
            "unit": r.register.unit,
            "address": r.register.address,
            "function_code": int(r.register.function_code),
            "time": datetime.fromtimestamp(r.time, UTC).isoformat(),
        }
        for r in result.readings
    ]
    return rows


def _report_read(result, as_json: bool, source: str) -> None:
    """Print one meter's readings (and its errors, one line each naming `source`, the meter
    or host) for `read` and `probe`."""
    rows = _result_rows(result)
    summary = {
        "meter": result.meter.meter_id,
        "endpoint": str(result.meter.endpoint),
        "ok": result.ok,
        "requests": result.requests,
        "latency_ms": None if result.mean_latency_ms is None else round(result.mean_latency_ms, 1),
        "errors": list(dict.fromkeys(result.errors)),
        "readings": rows,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        for row in rows:
            row["value"] = f"{row['value']:.10g}"
        _print_table(
            rows,
            [("measurement", "MEASUREMENT"), ("value", "VALUE"), ("unit", "UNIT"),
             ("function_code", "FC"), ("address", "ADDRESS")],
        )  # fmt: skip
        latency = "" if summary["latency_ms"] is None else f", {summary['latency_ms']} ms/request"
        click.echo(
            f"-- {summary['endpoint']}: {len(rows)} value(s), {result.requests} request(s){latency}"
        )
        for error in summary["errors"]:
            click.echo(f"error: {source}: {error}", err=True)
    if not result.ok:
        sys.exit(EXIT_USER_ERROR)


@cli.command("read")
@click.argument("meter_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def read_meter(meter_id: int, as_json: bool) -> None:
    """Read one meter from the registry now, the way a poll run does.

    Exits 1 when any value could not be read (the values that could are still printed)."""
    from energymon_pipeline.modbus.reader import read_meters_sync
    from energymon_pipeline.registry.definitions import load_definitions

    definitions = load_definitions(_engine(), meter_ids=[meter_id])
    if not definitions.meters:
        raise EnergymonError(
            definitions.problems[0]
            if definitions.problems
            else f"meter {meter_id}: nothing to read"
        )
    for problem in definitions.problems:
        click.echo(f"warning: {problem}", err=True)
    [meter] = definitions.meters
    _report_read(read_meters_sync([meter])[0], as_json, f"meter {meter_id} ({meter.endpoint})")


#: The Modbus limit on one register read (function 3/4); bit reads (1/2) allow 2000.
MAX_REGISTERS_PER_READ = 125
_PROBE_LABELS = {FunctionCode.READ_COILS: "coil", FunctionCode.READ_DISCRETE_INPUTS: "input"}


@cli.command("probe")
@click.option("--host", required=True, help="Device or gateway host.")
@click.option("--port", type=click.IntRange(1, 65535), default=502, show_default=True)
@click.option(
    "--unit",
    type=click.IntRange(0, 255),
    default=1,
    show_default=True,
    help="Modbus unit id (slave address).",
)
@click.option(
    "--address",
    type=click.IntRange(0, 65535),
    required=True,
    help="Zero-based protocol address of the first value (register 40001 -> 0).",
)
@click.option(
    "--count",
    type=click.IntRange(1, 2000),
    default=1,
    show_default=True,
    help="How many consecutive values to read in one request: for functions 3/4 values of "
    "--type, at most 125 registers in all (125 INT16, 62 FLOAT32, 31 FLOAT64); for functions "
    "1/2 bits, at most 2000.",
)
@click.option(
    "--function",
    "function_code",
    type=click.IntRange(1, 4),
    default=3,
    show_default=True,
    help="1 coils, 2 discrete inputs, 3 holding, 4 input registers.",
)
@click.option(
    "--type",
    "data_type",
    default="FLOAT32",
    show_default=True,
    type=click.Choice(
        [t.name for t in DataType] + [str(int(t)) for t in DataType], case_sensitive=False
    ),
    help="Data type name or code.",
)
@click.option(
    "--word-order", type=click.Choice(["big", "little", "1", "2"]), default="big", show_default=True
)
@click.option(
    "--byte-order", type=click.Choice(["big", "little", "1", "2"]), default="big", show_default=True
)
@click.option("--framer", type=click.Choice(["socket", "rtu"]), default="socket", show_default=True)
@click.option(
    "--timeout", "timeout_s", type=click.FloatRange(0.1, 60), default=3.0, show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def probe(host, port, unit, address, count, function_code, data_type, word_order, byte_order,
          framer, timeout_s, as_json) -> None:  # fmt: skip
    """Ad-hoc read of consecutive values, for working out a new device's register map."""
    from energymon_pipeline.modbus.reader import read_meters_sync

    dtype = DataType(int(data_type)) if data_type.isdigit() else DataType[data_type.upper()]
    fc = FunctionCode(function_code)
    width = 1 if fc.is_bit else dtype.words
    if address + width * count > 65536:
        raise EnergymonError(
            f"--address {address} + {count} value(s) of {width} register(s) runs past 65535"
        )
    if not fc.is_bit and width * count > MAX_REGISTERS_PER_READ:
        raise EnergymonError(
            f"--count {count} of {dtype.name} needs {width * count} registers; allowed: at most "
            f"{MAX_REGISTERS_PER_READ} registers in one request"
        )

    def order(text: str) -> Order:
        return Order.LITTLE if text in ("little", "1") else Order.BIG

    label = _PROBE_LABELS.get(fc) or dtype.name.lower()
    specs = tuple(
        RegisterSpec(
            measurement=f"{label}@{address + i * width}",
            address=address + i * width,
            data_type=dtype,
            function_code=fc,
            word_order=order(word_order),
            byte_order=order(byte_order),
        )
        for i in range(count)
    )
    meter = MeterSpec(
        meter_id=-1,
        endpoint=Endpoint(host, port, unit, framer=framer, timeout_s=timeout_s, retries=0),
        meter_type="probe",
        description=None,
        registers=specs,
        plan_options=PlanOptions(max_gap=0),
    )
    _report_read(read_meters_sync([meter])[0], as_json, str(meter.endpoint))


@cli.group(cls=UserErrorGroup)
def spool() -> None:
    """The write-ahead spool: batches waiting for InfluxDB."""


def _write_path():
    from energymon_pipeline.influx.write_path import WritePath

    return WritePath.from_settings()


@spool.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def spool_status(as_json: bool) -> None:
    """How much is waiting, and since when (every spool: with INFLUXDB_RAW_RETENTION, raw
    readings wait in a spool of their own)."""
    infos = []
    for queue, status in _write_path().status():
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
    result = _write_path().flush()
    for line in [*map(str, result.losses), *result.rejected]:
        click.echo(f"warning: {line}", err=True)
    click.echo(
        f"sent {result.sent_batches} batch(es), {result.sent_points} point(s); "
        f"{result.backlog_batches} batch(es) still waiting"
    )
    if result.error is not None:
        raise EnergymonError(str(result.error))


def _register_command_groups() -> None:
    from energymon_pipeline.commands.latest import latest
    from energymon_pipeline.commands.profiles import profiles

    cli.add_command(profiles)
    cli.add_command(latest)


_register_command_groups()


def main() -> None:
    # The commands print what the library reports, one line each; without this, Python's
    # last-resort handler would print the library's log records a second time.
    logging.getLogger("energymon_pipeline").addHandler(logging.NullHandler())
    cli.main(prog_name="energymon")


if __name__ == "__main__":
    sys.exit(main())

"""`energymon read` and `energymon probe`: one meter read now, the way a poll run reads it,
printed for a person (or as JSON). `read` takes the meter from the registry, `probe` reads
consecutive values of a device the registry does not know yet."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from energymon_pipeline.commands.configured import registry_engine
from energymon_pipeline.commands.errors import EXIT_USER_ERROR
from energymon_pipeline.commands.output import print_table
from energymon_pipeline.errors import EnergymonError
from energymon_pipeline.modbus.types import (
    MAX_BITS_PER_REQUEST,
    MAX_REGISTERS_PER_REQUEST,
    DataType,
    Endpoint,
    FunctionCode,
    MeterSpec,
    Order,
    PlanOptions,
    RegisterSpec,
    SerialLine,
)
from energymon_pipeline.registry.definitions import load_definitions
from energymon_pipeline.registry.learnt_splits import save_learnt_splits

_PROBE_LABELS = {FunctionCode.READ_COILS: "coil", FunctionCode.READ_DISCRETE_INPUTS: "input"}


def _result_rows(result) -> list[dict[str, Any]]:
    return [
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
        print_table(
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


@click.command("read")
@click.argument("meter_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--rediscover",
    is_flag=True,
    help="A sunspec meter: discover its SunSpec layout again and keep it before reading.",
)
def read_meter(meter_id: int, as_json: bool, rediscover: bool) -> None:
    """Read one meter from the registry now, the way a poll run does.

    Exits 1 when any value could not be read (the values that could are still printed)."""
    from energymon_pipeline.devices.sunspec_store import ensure_layout
    from energymon_pipeline.modbus.reader import read_meters_sync

    engine = registry_engine()
    # A `sunspec` meter without a layout for its endpoint yet (or --rediscover).
    discovered = ensure_layout(engine, meter_id, again=rediscover)
    if discovered:
        click.echo(f"meter {meter_id}: discovered {discovered}", err=True)
    definitions = load_definitions(engine, meter_ids=[meter_id])
    if not definitions.meters:
        raise EnergymonError(
            definitions.problems[0]
            if definitions.problems
            else f"meter {meter_id}: nothing to read"
        )
    for problem in definitions.problems:
        click.echo(f"warning: {problem}", err=True)
    [meter] = definitions.meters
    [result] = read_meters_sync([meter])
    # What this read learnt about the device (exception 2 on a merged read) serves the polls;
    # a registry that cannot take it now must not hide the readings.
    try:
        save_learnt_splits(engine, [(meter, result.learnt_splits)])
    except (EnergymonError, SQLAlchemyError) as error:
        click.echo(f"warning: meter {meter_id}: learnt request splits not saved: {error}", err=True)
    _report_read(result, as_json, f"meter {meter_id} ({meter.endpoint})")


def serial_options(instead_of: str):
    """--serial PATH and its line settings (`probe`, `discover`): Modbus RTU on a local port
    instead of `instead_of`."""
    options = [
        click.option(
            "--serial",
            "serial_port",
            default=None,
            help="Serial device path for Modbus RTU on a local port, e.g. /dev/ttyUSB0 "
            f"(instead of {instead_of}).",
        ),
        click.option(
            "--baudrate", type=click.IntRange(50, 4_000_000), default=9600, show_default=True
        ),
        click.option(
            "--parity",
            type=click.Choice(["N", "E", "O"], case_sensitive=False),
            default="N",
            show_default=True,
            help="Serial parity: N none, E even, O odd.",
        ),
        click.option("--stopbits", type=click.Choice(["1", "2"]), default="1", show_default=True),
        click.option("--bytesize", type=click.Choice(["7", "8"]), default="8", show_default=True),
    ]

    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


@click.command("probe")
@click.option("--host", default=None, help="Device or gateway host (or --serial).")
@click.option("--port", type=click.IntRange(1, 65535), default=502, show_default=True)
@serial_options("--host")
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
    type=click.IntRange(1, MAX_BITS_PER_REQUEST),
    default=1,
    show_default=True,
    help="How many consecutive values to read in one request: for functions 3/4 values of "
    f"--type, at most {MAX_REGISTERS_PER_REQUEST} registers in all (125 INT16, 62 FLOAT32, 31 "
    f"FLOAT64); for functions 1/2 bits, at most {MAX_BITS_PER_REQUEST}.",
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
def probe(host, port, serial_port, baudrate, parity, stopbits, bytesize, unit, address, count,
          function_code, data_type, word_order, byte_order, framer, timeout_s,
          as_json) -> None:  # fmt: skip
    """Ad-hoc read of consecutive values, for working out a new device's register map."""
    from energymon_pipeline.modbus.reader import read_meters_sync

    if (host is None) == (serial_port is None):
        raise click.UsageError("give --host (Modbus TCP) or --serial PATH (Modbus RTU), not both")
    line = None
    if serial_port is not None:
        line = SerialLine(serial_port, baudrate, parity.upper(), int(stopbits), int(bytesize))
        host, port = serial_port, 0

    dtype = DataType(int(data_type)) if data_type.isdigit() else DataType[data_type.upper()]
    fc = FunctionCode(function_code)
    width = 1 if fc.is_bit else dtype.words
    if address + width * count > 65536:
        raise EnergymonError(
            f"--address {address} + {count} value(s) of {width} register(s) runs past 65535"
        )
    if not fc.is_bit and width * count > MAX_REGISTERS_PER_REQUEST:
        raise EnergymonError(
            f"--count {count} of {dtype.name} needs {width * count} registers; allowed: at most "
            f"{MAX_REGISTERS_PER_REQUEST} registers in one request"
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
        endpoint=Endpoint(
            host, port, unit, framer=framer, timeout_s=timeout_s, retries=0, serial=line
        ),
        meter_type="probe",
        description=None,
        registers=specs,
        plan_options=PlanOptions(max_gap=0),
    )
    _report_read(read_meters_sync([meter])[0], as_json, str(meter.endpoint))

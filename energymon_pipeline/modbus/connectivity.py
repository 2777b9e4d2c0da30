"""Does a meter answer? A TCP connect (with its latency), then a Modbus read of the meter's
first register on that connection; for a meter on a serial port, the read alone (opening the
port is part of it). Used by connectivity_check_job when the sensor sees a new or edited
meter."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from energymon_pipeline.modbus.client import ErrorKind, ModbusConnection, ReadError
from energymon_pipeline.modbus.plan import plan_requests
from energymon_pipeline.modbus.types import MeterSpec, PlanOptions

REACHABLE = "reachable"
REFUSED = "refused"
TIMEOUT = "timeout"
NO_REGISTERS = "no registers configured"
UNREACHABLE = "connection failed"


@dataclass(frozen=True)
class ConnectivityResult:
    result: str
    latency_ms: float | None
    message: str

    @property
    def ok(self) -> bool:
        return self.result == REACHABLE


def _connect_failure(meter: MeterSpec, error: ReadError) -> ConnectivityResult:
    endpoint = meter.endpoint
    if error.kind is ErrorKind.REFUSED:
        return ConnectivityResult(
            REFUSED, None, f"{endpoint.host}:{endpoint.port} refused the connection"
        )
    if error.kind is ErrorKind.TIMEOUT:
        return ConnectivityResult(
            TIMEOUT, None, f"no TCP connection to {endpoint.host}:{endpoint.port} within "
            f"{endpoint.timeout_s:g} s",
        )  # fmt: skip
    return ConnectivityResult(UNREACHABLE, None, error.detail or str(error))


async def check(meter: MeterSpec) -> ConnectivityResult:
    """reachable / refused / timeout / modbus exception N / no registers configured.

    The connect and the read use one connection: a gateway that accepts one connection may
    refuse a second one opened right after the first closed (it has not seen the close yet)."""
    connection = ModbusConnection(meter.endpoint)
    try:
        return await _check(meter, connection)
    finally:
        connection.close()


async def _check(meter: MeterSpec, connection: ModbusConnection) -> ConnectivityResult:
    line = meter.endpoint.serial
    latency_ms = None
    if line is not None:
        opened = f"serial port {line}"
    else:
        started = time.monotonic()
        error = await connection.open()
        if error is not None:
            return _connect_failure(meter, error)
        latency_ms = (time.monotonic() - started) * 1000
        opened = f"TCP connect in {latency_ms:.1f} ms"
    if not meter.registers:
        return ConnectivityResult(
            NO_REGISTERS, latency_ms,
            f"{opened}, but type {meter.meter_type!r} has no registers to read",
        )  # fmt: skip
    first = min(meter.registers, key=lambda r: (int(r.function_code), r.address))
    [request] = plan_requests([first], PlanOptions(single_register_reads=True))
    block = await connection.read(request)
    what = f"FC{int(first.function_code)} address {first.address} ({first.measurement})"
    if block.error is None:
        return ConnectivityResult(
            REACHABLE, latency_ms, f"{opened}; read {what} in {block.latency_s * 1000:.1f} ms"
        )
    error = block.error
    if error.kind is ErrorKind.MODBUS_EXCEPTION:
        result = f"modbus exception {error.exception_code}"
    elif error.kind is ErrorKind.TIMEOUT:
        result = TIMEOUT
    elif error.kind is ErrorKind.REFUSED:
        result = REFUSED
    else:
        result = UNREACHABLE if error.kind is ErrorKind.CONNECTION else str(error.kind)
    return ConnectivityResult(result, latency_ms, f"reading {what}: {error}")


def check_sync(meter: MeterSpec) -> ConnectivityResult:
    return asyncio.run(check(meter))

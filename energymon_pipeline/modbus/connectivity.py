"""Does a meter answer? A TCP connect (with its latency), then a Modbus read of the meter's
first register; for a meter on a serial port, the read alone (opening the port is part of it).
Used by connectivity_check_job when the sensor sees a new or edited meter."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from dataclasses import dataclass

from energymon_pipeline.modbus.client import ErrorKind, ModbusConnection
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


async def _tcp_connect(meter: MeterSpec) -> ConnectivityResult:
    endpoint = meter.endpoint
    started = time.monotonic()
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(endpoint.host, endpoint.port), timeout=endpoint.timeout_s
        )
    except TimeoutError:
        return ConnectivityResult(
            TIMEOUT, None, f"no TCP connection to {endpoint.host}:{endpoint.port} within "
            f"{endpoint.timeout_s:g} s"
        )  # fmt: skip
    except ConnectionRefusedError:
        return ConnectivityResult(
            REFUSED, None, f"{endpoint.host}:{endpoint.port} refused the connection"
        )
    except socket.gaierror as error:
        return ConnectivityResult(
            UNREACHABLE, None, f"host {endpoint.host!r} not found ({error.strerror})"
        )
    except OSError as error:
        if error.errno == errno.ECONNREFUSED:
            return ConnectivityResult(
                REFUSED, None, f"{endpoint.host}:{endpoint.port} refused the connection"
            )
        return ConnectivityResult(
            UNREACHABLE, None, f"{endpoint.host}:{endpoint.port}: {error.strerror or error}"
        )
    latency_ms = (time.monotonic() - started) * 1000
    writer.close()
    with contextlib.suppress(TimeoutError, OSError):
        await asyncio.wait_for(writer.wait_closed(), timeout=1)
    return ConnectivityResult(REACHABLE, latency_ms, f"TCP connect in {latency_ms:.1f} ms")


async def check(meter: MeterSpec) -> ConnectivityResult:
    """reachable / refused / timeout / modbus exception N / no registers configured."""
    line = meter.endpoint.serial
    if line is not None:
        opened = f"serial port {line}"
        tcp = ConnectivityResult(REACHABLE, None, opened)
    else:
        tcp = await _tcp_connect(meter)
        if not tcp.ok:
            return tcp
        opened = f"TCP connect in {tcp.latency_ms:.1f} ms"
    if not meter.registers:
        return ConnectivityResult(
            NO_REGISTERS, tcp.latency_ms,
            f"{opened}, but type {meter.meter_type!r} has no registers to read",
        )  # fmt: skip
    first = min(meter.registers, key=lambda r: (int(r.function_code), r.address))
    [request] = plan_requests([first], PlanOptions(single_register_reads=True))
    connection = ModbusConnection(meter.endpoint)
    try:
        block = await connection.read(request)
    finally:
        connection.close()
    what = f"FC{int(first.function_code)} address {first.address} ({first.measurement})"
    if block.error is None:
        return ConnectivityResult(
            REACHABLE, tcp.latency_ms,
            f"{opened}; read {what} in {block.latency_s * 1000:.1f} ms",
        )  # fmt: skip
    error = block.error
    if error.kind is ErrorKind.MODBUS_EXCEPTION:
        result = f"modbus exception {error.exception_code}"
    elif error.kind is ErrorKind.TIMEOUT:
        result = TIMEOUT
    elif error.kind is ErrorKind.REFUSED:
        result = REFUSED
    else:
        result = UNREACHABLE if error.kind is ErrorKind.CONNECTION else str(error.kind)
    return ConnectivityResult(result, tcp.latency_ms, f"reading {what}: {error}")


def check_sync(meter: MeterSpec) -> ConnectivityResult:
    return asyncio.run(check(meter))

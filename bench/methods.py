"""The three ways one poll cycle is done on the same fleet, each run in its own child process.

- `OursCycle`: the real poll path, the library calls the Dagster ops make, in their order:
  plan + read + decode (`read_meters`), validate (`readings.validate`), line protocol
  (`poll_batch`: the readings plus one `energymon_poll` point per meter, as the write op),
  then `WritePath` append + flush to InfluxDB with the `energymon_spool` backlog point (the
  write op's own calls, on its default path; INFLUXDB_RAW_RETENTION would add a second spool).
- `OriginalCycle`: the 2020 system's method, reimplemented small and faithfully: one Modbus
  request per register, at most 10 meters in flight (a 10-thread pool, one job per meter, the
  synchronous pymodbus client), each value decoded on its own with `struct`, and each meter's
  points written by its job as JSON points through influxdb-python (server-stamped, as the
  original wrote them).
- `FloorCycle`: the transport floor: exactly the requests of our plan, issued by a bare
  pymodbus asyncio loop with our concurrency and one connection per meter like ours, without
  decoding or writing anything.
- `BusFloorCycle`: the bus floor of a gateway fleet: one connection per gateway, each
  gateway's planned requests back to back (every meter's, each to its unit id), gateways in
  parallel, nothing decoded or written: the fastest one-request-at-a-time buses allow.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from influxdb import InfluxDBClient
from pymodbus.client import AsyncModbusTcpClient, ModbusTcpClient

from energymon_pipeline import readings
from energymon_pipeline.influx.poll_health import poll_batch
from energymon_pipeline.influx.write_path import WritePath
from energymon_pipeline.influx.writer import InfluxTarget
from energymon_pipeline.modbus.plan import plan_requests
from energymon_pipeline.modbus.reader import read_meters
from energymon_pipeline.modbus.types import DataType, FunctionCode, MeterSpec, Order

ORIGINAL_METERS_IN_FLIGHT = 10
# InfluxResource's defaults (resources.py).
SPOOL_MAX_BYTES = 512 * 1024**2
SPOOL_MAX_AGE_S = 30 * 86400


class Clock:
    """Wall and process CPU time of a cycle, with named stages."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()
        self.stages: dict[str, float] = {}
        self._last = self.started

    def stage(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = now - self._last
        self._last = now

    def result(self, **extra) -> dict:
        return {
            "seconds": time.perf_counter() - self.started,
            "cpu_seconds": time.process_time() - self.cpu_started,
            "stages": self.stages,
            **extra,
        }


class OursCycle:
    def __init__(
        self, meters: list[MeterSpec], target: InfluxTarget, spool_dir: Path, concurrency: int
    ) -> None:
        self.meters = meters
        self.target = target
        self.spool_dir = spool_dir
        self.concurrency = concurrency

    def planned_requests(self) -> int:
        return sum(len(plan_requests(m.registers, m.plan_options)) for m in self.meters)

    def run(self) -> dict:
        clock = Clock()
        results = asyncio.run(read_meters(self.meters, None, self.concurrency))
        clock.stage("read")
        validated = readings.validate(results)
        frame = validated.frame
        clock.stage("validate")
        now = datetime.now(UTC)
        batch = poll_batch(results, frame, validated.dropped, now)  # as the write op builds it
        clock.stage("lines")
        path = WritePath(self.target, self.spool_dir, SPOOL_MAX_BYTES, SPOOL_MAX_AGE_S)
        path.append(batch.lines, batch.health)
        clock.stage("spool")
        flushed = path.flush(now)  # the write op's call: batches, then the backlog point
        clock.stage("write")
        errors = Counter(e for r in results for e in r.errors)
        return clock.result(
            requests=sum(r.requests for r in results),
            readings=sum(r.values_read for r in results),
            written=len(frame),
            points=flushed.sent_points,
            meters_failed=sum(not r.ok for r in results),
            errors=[f"{n} x {e}" for e, n in errors.most_common(3)],
            write_error=None if flushed.error is None else str(flushed.error),
        )


# -- the original's method ------------------------------------------------------------------


def original_decode(words: list[int], data_type: DataType, word_order: Order, byte_order: Order):
    """One value, the original's way: the words' bytes reordered, then struct.unpack."""
    if data_type is DataType.INT16 or len(words) == 1:
        raw = words[0].to_bytes(2, "big")
        if byte_order is Order.LITTLE:
            raw = raw[::-1]
        return float(struct.unpack(">h", raw)[0])
    ordered = words if word_order is Order.BIG else list(reversed(words))
    raw = b"".join(
        w.to_bytes(2, "big") if byte_order is Order.BIG else w.to_bytes(2, "little")
        for w in ordered
    )
    return float(struct.unpack(">f" if data_type is DataType.FLOAT32 else ">i", raw)[0])


class OriginalCycle:
    def __init__(self, meters: list[MeterSpec], target: InfluxTarget) -> None:
        self.meters = meters
        self.target = target
        self._local = threading.local()

    def planned_requests(self) -> int:
        return sum(len(m.registers) for m in self.meters)

    def setup(self) -> None:
        """The original created its database when it started (not timed)."""
        self._influx().create_database(self.target.database)

    def _influx(self) -> InfluxDBClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = InfluxDBClient(
                host=self.target.host,
                port=self.target.port,
                database=self.target.database,
                timeout=self.target.timeout_s,
            )
        return client

    def _meter(self, meter: MeterSpec) -> tuple[int, int, str | None]:
        endpoint = meter.endpoint
        client = ModbusTcpClient(
            endpoint.host,
            port=endpoint.port,
            timeout=endpoint.timeout_s,
            retries=endpoint.retries,
        )
        requests = 0
        points = []
        try:
            if not client.connect():
                return 0, 0, f"cannot connect to {endpoint}"
            for register in meter.registers:  # one request per register
                if register.function_code is FunctionCode.READ_HOLDING_REGISTERS:
                    call = client.read_holding_registers
                else:
                    call = client.read_input_registers
                response = call(register.address, count=register.width, device_id=endpoint.unit_id)
                requests += 1
                if response.isError():
                    continue
                value = original_decode(
                    response.registers, register.data_type, register.word_order, register.byte_order
                )
                points.append(
                    {
                        "measurement": register.measurement,
                        "tags": {
                            "id": str(meter.meter_id),
                            "description": meter.description,
                            "dataunit": register.unit or "",
                        },
                        "fields": {"value": value},
                    }
                )
        except Exception as error:  # the original lost the meter's cycle on any error
            return requests, 0, f"{endpoint}: {error}"
        finally:
            client.close()
        self._influx().write_points(points)
        return requests, len(points), None

    def run(self) -> dict:
        clock = Clock()
        with ThreadPoolExecutor(max_workers=ORIGINAL_METERS_IN_FLIGHT) as pool:
            outcomes = list(pool.map(self._meter, self.meters))
        clock.stage("read+write")
        errors = Counter(error for _, _, error in outcomes if error)
        failed = sum(
            1
            for meter, (_, values, error) in zip(self.meters, outcomes, strict=True)
            if error or values < len(meter.registers)
        )
        return clock.result(
            requests=sum(r for r, _, _ in outcomes),
            readings=sum(n for _, n, _ in outcomes),
            written=sum(n for _, n, _ in outcomes),
            meters_failed=failed,
            errors=[f"{n} x {e}" for e, n in errors.most_common(3)],
        )


# -- the transport floor --------------------------------------------------------------------


class FloorCycle:
    def __init__(self, meters: list[MeterSpec], concurrency: int) -> None:
        self.meters = meters
        self.concurrency = concurrency
        self.plans = [plan_requests(m.registers, m.plan_options) for m in meters]

    def planned_requests(self) -> int:
        return sum(len(plan) for plan in self.plans)

    async def _all(self) -> list[tuple[int, int, str | None]]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(meter: MeterSpec, plan) -> tuple[int, int, str | None]:
            endpoint = meter.endpoint
            async with gate:
                client = AsyncModbusTcpClient(
                    endpoint.host,
                    port=endpoint.port,
                    timeout=endpoint.timeout_s,
                    retries=endpoint.retries,
                    reconnect_delay=0,
                    reconnect_delay_max=0,
                )
                try:
                    if not await client.connect():
                        return 0, 0, f"cannot connect to {endpoint}"
                    requests = registers = 0
                    for request in plan:
                        if request.function_code is FunctionCode.READ_HOLDING_REGISTERS:
                            call = client.read_holding_registers
                        else:
                            call = client.read_input_registers
                        response = await call(
                            request.address, count=request.count, device_id=endpoint.unit_id
                        )
                        requests += 1
                        if not response.isError():
                            registers += len(response.registers)
                    return requests, registers, None
                except Exception as error:
                    return 0, 0, f"{endpoint}: {error}"
                finally:
                    client.close()

        return list(
            await asyncio.gather(*(one(m, p) for m, p in zip(self.meters, self.plans, strict=True)))
        )

    def run(self) -> dict:
        clock = Clock()
        outcomes = asyncio.run(self._all())
        clock.stage("read")
        errors = Counter(error for _, _, error in outcomes if error)
        return clock.result(
            requests=sum(r for r, _, _ in outcomes),
            registers=sum(n for _, n, _ in outcomes),
            meters_failed=sum(1 for _, _, e in outcomes if e),
            errors=[f"{n} x {e}" for e, n in errors.most_common(3)],
        )


# -- the bus floor (gateway fleets) ------------------------------------------------------------


class BusFloorCycle:
    def __init__(self, meters: list[MeterSpec]) -> None:
        self.buses: dict[tuple[str, int], list[tuple[MeterSpec, list]]] = {}
        for meter in meters:
            plan = plan_requests(meter.registers, meter.plan_options)
            key = (meter.endpoint.host, meter.endpoint.port)
            self.buses.setdefault(key, []).append((meter, plan))

    def planned_requests(self) -> int:
        return sum(len(plan) for bus in self.buses.values() for _, plan in bus)

    def ready_info(self) -> dict:
        """The busiest bus's planned requests: the computed bus floor is that x the delay."""
        return {
            "buses": len(self.buses),
            "busiest_bus_requests": max(
                sum(len(plan) for _, plan in bus) for bus in self.buses.values()
            ),
        }

    async def _bus(self, bus: list[tuple[MeterSpec, list]]) -> tuple[int, int, str | None]:
        first = bus[0][0].endpoint
        client = AsyncModbusTcpClient(
            first.host,
            port=first.port,
            timeout=first.timeout_s,
            retries=first.retries,
            reconnect_delay=0,
            reconnect_delay_max=0,
        )
        requests = registers = 0
        try:
            if not await client.connect():
                return 0, 0, f"cannot connect to {first.host}:{first.port}"
            for meter, plan in bus:
                for request in plan:
                    if request.function_code is FunctionCode.READ_HOLDING_REGISTERS:
                        call = client.read_holding_registers
                    else:
                        call = client.read_input_registers
                    response = await call(
                        request.address, count=request.count, device_id=meter.endpoint.unit_id
                    )
                    requests += 1
                    if not response.isError():
                        registers += len(response.registers)
            return requests, registers, None
        except Exception as error:
            return requests, registers, f"{first.host}:{first.port}: {error}"
        finally:
            client.close()

    async def _all(self) -> list[tuple[int, int, str | None]]:
        return list(await asyncio.gather(*(self._bus(bus) for bus in self.buses.values())))

    def run(self) -> dict:
        clock = Clock()
        outcomes = asyncio.run(self._all())
        clock.stage("read")
        errors = Counter(error for _, _, error in outcomes if error)
        return clock.result(
            requests=sum(r for r, _, _ in outcomes),
            registers=sum(n for _, n, _ in outcomes),
            meters_failed=sum(
                len(bus) for bus, (_, _, e) in zip(self.buses.values(), outcomes, strict=True) if e
            ),
            errors=[f"{n} x {e}" for e, n in errors.most_common(3)],
        )

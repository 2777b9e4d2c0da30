"""Reading many meters at once: planned requests, bounded concurrency, partial results.

Meters are read over their links (modbus/links.py): the meters sharing a gateway (host, port,
framer) or a serial port are read over the link's own connections (`max_connections`,
default 1), opened once for all samples of a run (under a `link_guard`, once per sample),
one request in flight per connection, each
addressed to its meter's unit id; different links are read concurrently on one event loop, at
most `concurrency` meters being read at a time. A timeout on one meter ends that meter's
sample only: the connection is closed after it (a late answer is never read as the next
meter's) and reopened for the link's next meter. A caller's `link_guard` is held around each
sample of a link (the Dagster ops take the link's concurrency pool there); with one, the link's
connections are closed between samples so another run can use the link. A fault costs only what
it touched: a Modbus exception loses that request's values; a read that spans unmapped
registers (exception 2) is split into single-value reads, for the rest of the run and (the
caller keeps `MeterResult.learnt_splits` in the registry) for the next runs; a timeout or a
lost connection (refused, failed, or closed by the device) ends that meter's sample (the
remaining requests would fail the same way, each after another timeout) but never delays the
other meters. A malformed answer costs only its own request: the client closes the connection
after it, so the next request starts on a clean stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from energymon_pipeline.modbus.client import BlockRead, ErrorKind, ModbusConnection
from energymon_pipeline.modbus.decode import block_decoder
from energymon_pipeline.modbus.links import Link, LinkUnavailable, group_links
from energymon_pipeline.modbus.plan import MeterPlanner, SharedPlans
from energymon_pipeline.modbus.types import MeterSpec, ReadRequest, RegisterSpec, SplitKey

DEFAULT_CONCURRENCY = 64
ILLEGAL_DATA_ADDRESS = 2
#: Faults after which the rest of a meter's sample is not attempted.
FATAL_KINDS = {ErrorKind.TIMEOUT, ErrorKind.REFUSED, ErrorKind.CONNECTION, ErrorKind.CLOSED}


@dataclass(frozen=True, slots=True)
class Reading:
    """One decoded value; `time` is when its response arrived (epoch seconds, UTC)."""

    time: float
    register: RegisterSpec
    value: float


@dataclass(frozen=True, slots=True)
class Block:
    """The values one answered request gave: `values[i]` (float64) is `registers[i]`'s, and
    `time` is when the answer arrived (epoch seconds, UTC). Values stay in their array from
    the decoder to the readings frame: no Python object per value on the way."""

    time: float
    registers: tuple[RegisterSpec, ...]
    values: np.ndarray


@dataclass
class MeterResult:
    """What reading one meter produced in one run, for the run metadata and the writer."""

    meter: MeterSpec
    blocks: list[Block] = field(default_factory=list)
    #: Values in `blocks`, all samples.
    values_read: int = 0
    requests: int = 0
    registers_read: int = 0
    errors: list[str] = field(default_factory=list)
    failed_values: int = 0
    samples: int = 0
    latency_s: list[float] = field(default_factory=list)
    #: When this meter's first request was sent (epoch seconds), None before any: how late a
    #: scheduled sample really started.
    first_request_at: float | None = None
    #: Values read alone from now on because a merged read of them got exception 2 in this
    #: read, beyond the meter's `learnt_splits`: for the caller to keep for the next runs.
    learnt_splits: frozenset[SplitKey] = frozenset()

    def add(self, time: float, registers: tuple[RegisterSpec, ...], values: np.ndarray) -> None:
        """Keep the values of one answer (`values[i]` belongs to `registers[i]`)."""
        if len(registers) != len(values):
            raise ValueError(f"{len(values)} values for {len(registers)} registers")
        self.blocks.append(Block(time, registers, values))
        self.values_read += len(registers)

    @property
    def readings(self) -> list[Reading]:
        """One `Reading` per value, in read order: for people and tests (the CLI's table);
        the poll path works on `blocks`."""
        return [
            Reading(block.time, register, value)
            for block in self.blocks
            for register, value in zip(block.registers, block.values.tolist(), strict=True)
        ]

    @property
    def ok(self) -> bool:
        """Every configured value of every sample was read."""
        return not self.errors and self.failed_values == 0

    @property
    def mean_latency_ms(self) -> float | None:
        return 1000 * sum(self.latency_s) / len(self.latency_s) if self.latency_s else None

    @property
    def error(self) -> str | None:
        """The distinct errors, joined for one table cell."""
        if not self.errors:
            return None
        distinct = list(dict.fromkeys(self.errors))
        more = f" (+{len(distinct) - 3} more)" if len(distinct) > 3 else ""
        return "; ".join(distinct[:3]) + more


def _describe(request: ReadRequest) -> str:
    names = [r.measurement for r in request.registers]
    shown = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")
    return (
        f"FC{int(request.function_code)} {request.address}-{request.end - 1} ({shown})"
        if request.count > 1
        else f"FC{int(request.function_code)} {request.address} ({shown})"
    )


class _MeterSession:
    def __init__(self, meter: MeterSpec, plans: SharedPlans | None = None) -> None:
        self.meter = meter
        self.planner = MeterPlanner(meter.learnt_splits, plans)
        #: The link's connection this meter's next sample is read over.
        self.connection: ModbusConnection | None = None
        self.result = MeterResult(meter)

    async def sample(self) -> None:
        result = self.result
        result.samples += 1
        requests = self.planner.plan(self.meter.registers, self.meter.plan_options)
        for index, request in enumerate(requests):
            block = await self._read(request)
            if block.error is None:
                continue
            code = block.error.exception_code
            if code == ILLEGAL_DATA_ADDRESS and len(request.registers) > 1:
                singles = self.planner.split(request)
                result.learnt_splits = self.planner.split_keys - self.meter.learnt_splits
                for single in singles:
                    single_block = await self._read(single)
                    if single_block.error is not None:
                        self._fail(single_block)
                        if single_block.error.kind in FATAL_KINDS:
                            break
                continue
            self._fail(block)
            if block.error.kind in FATAL_KINDS:
                for skipped in requests[index + 1 :]:
                    result.failed_values += len(skipped.registers)
                break

    async def _read(self, request: ReadRequest) -> BlockRead:
        assert self.connection is not None
        if self.result.first_request_at is None:
            self.result.first_request_at = time.time()
        block = await self.connection.read(request, self.meter.endpoint)
        self.result.requests += 1
        if block.error is None:
            self.result.registers_read += request.count
            self.result.latency_s.append(block.latency_s)
            decoder = block_decoder(request)
            decoded = decoder.decode(np.asarray(block.data, dtype=np.uint16))
            registers = request.registers
            if decoder.absent_possible is not None:  # e.g. SunSpec's "not implemented"
                registers, decoded = decoder.present(decoded)
            # The decoded array is kept as it is (this runs between an answer and the next
            # request on the bus): readings.validate builds the frame from the arrays.
            self.result.blocks.append(Block(block.received_at, registers, decoded))
            self.result.values_read += len(registers)
        return block

    def _fail(self, block: BlockRead) -> None:
        self.result.failed_values += len(block.request.registers)
        self.result.errors.append(f"{_describe(block.request)}: {block.error}")


#: Held around one link's read: an async context manager per link (e.g. a Dagster pool slot).
LinkGuard = Callable[[Link], contextlib.AbstractAsyncContextManager]


async def read_meters(
    meters: Iterable[MeterSpec],
    sample_times: Sequence[float] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    link_guard: LinkGuard | None = None,
) -> list[MeterResult]:
    """Read every meter at each of `sample_times` (epoch seconds; a time already past is
    sampled at once; None means one sample now). Results come back in the meters' order."""
    plans = SharedPlans()
    sessions = [_MeterSession(meter, plans) for meter in meters]
    times = sorted(sample_times) if sample_times else [time.time()]
    gate = asyncio.Semaphore(max(1, concurrency))

    async def read_link(link: Link, members: list[_MeterSession]) -> None:
        connections = [ModbusConnection(link.endpoint) for _ in range(link.connections)]

        async def serve(connection: ModbusConnection, queue: list[_MeterSession]) -> None:
            # One request at a time on this connection: its meters one after the other.
            while queue:
                session = queue.pop(0)
                session.connection = connection
                async with gate:
                    await session.sample()

        try:
            for index, at in enumerate(times):
                delay = at - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    async with link_guard(link) if link_guard else contextlib.nullcontext():
                        try:
                            queue = list(members)
                            await asyncio.gather(*(serve(c, queue) for c in connections))
                        finally:
                            if link_guard:
                                # Held per sample: between samples another run may use the
                                # link, and a gateway with one connection needs ours closed
                                # for that, BEFORE the guard lets the next run in (closed
                                # after, the next run's connection met ours still open and
                                # was dropped at once).
                                for connection in connections:
                                    connection.close()
                                await asyncio.sleep(0)  # the transports' close callbacks run
                except LinkUnavailable as error:  # the guard's bounded wait ran out
                    left = len(times) - index  # this sample and the rest: not read this run
                    for session in members:
                        session.result.errors.append(str(error))
                        session.result.failed_values += len(session.meter.registers) * left
                    return
        finally:
            for connection in connections:
                connection.close()

    links = group_links(session.meter for session in sessions)
    members: dict[str, list[_MeterSession]] = {link.key: [] for link in links}
    for session in sessions:
        members[session.meter.endpoint.link_key].append(session)
    await asyncio.gather(*(read_link(link, members[link.key]) for link in links))
    return [session.result for session in sessions]


def read_meters_sync(
    meters: Iterable[MeterSpec],
    sample_times: Sequence[float] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    link_guard: LinkGuard | None = None,
) -> list[MeterResult]:
    """`read_meters` for synchronous callers (the CLI, Dagster ops)."""
    return asyncio.run(read_meters(meters, sample_times, concurrency, link_guard))

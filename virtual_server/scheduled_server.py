"""The server that refreshes its own values on a schedule: `VirtualModbusTCPServer`, a
`DeviceMemoryServer` that fills its memories from devices or a bridge. Its name and
`set_datastore()` are the original system's extension contract: subclass it and override
`set_datastore()`.

Differences from the original, each fixing one of its faults:

- `set_datastore()` runs once before the server accepts connections, so no client ever reads
  the zeros the original served until its first cron tick; then on the update schedule.
- It runs in a worker thread, so an extension that blocks on I/O (an HTTP fetch with a 5 s
  timeout) never stalls Modbus answers, and updates never overlap.
- The server is read-only and answers only the unit ids it simulates (by default, with no
  devices given, every unit id 0-255 as the original did).
- A failed source is published as "no value" (`set_no_value()`), never as 0.0.

The simpler form (a `Device` returning {address: value}) runs on the same machinery: a server
built with devices calls each device's `update()` from the default `set_datastore()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from energymon_pipeline.modbus.types import DataType, FunctionCode, Order
from virtual_server.devices.base import Device, Value, as_float32, publish
from virtual_server.memory import NO_VALUE_EXCEPTION, DeviceMemory
from virtual_server.schedule import UpdateSchedule
from virtual_server.server import DeviceMemoryServer
from virtual_server.settings import run_settings

__all__ = ["ALL_UNIT_IDS", "VirtualModbusTCPServer"]

logger = logging.getLogger(__name__)

#: Every unit id a Modbus TCP request can carry.
ALL_UNIT_IDS = range(256)

_T = TypeVar("_T")
_Server = TypeVar("_Server", bound="VirtualModbusTCPServer")


class VirtualModbusTCPServer(DeviceMemoryServer):
    """A read-only Modbus TCP server that refreshes its own values on a schedule (a
    `DeviceMemoryServer` only answers from memories its caller fills).

    Two ways to give it values:

    - Subclass it and override `set_datastore()`, writing with `set_value()` /
      `set_no_value()` (or straight into `self.memory`). Built without devices, the server
      answers every unit id from that one memory, as the original did.
    - Pass `devices`: one `Device` (answering every unit id) or {unit id: Device}. The same
      Device object under several unit ids is one memory answering under each.

    `set_datastore()` is called once in `start()`, before connections are accepted (an
    exception there fails the start: an extension that cannot produce its first values is
    broken), then at every firing of `schedule` (None: never again). A failing update is
    logged and the previous values stay published; an extension whose source is merely
    unreachable should publish no value instead of raising. `updates` counts the calls that
    completed.
    """

    def __init__(
        self,
        devices: Device | Mapping[int, Device] | None = None,
        *,
        schedule: UpdateSchedule | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        response_delay_ms: float = 0,
        answer_unknown_units: bool = False,
        gateway: bool = False,
        max_connections: int = 0,
    ) -> None:
        if isinstance(devices, Device):
            devices = dict.fromkeys(ALL_UNIT_IDS, devices)
        self.simulated: dict[int, Device] = dict(devices or {})
        # Distinct devices, each with its own memory, in unit id order.
        self._device_memories: list[tuple[Device, DeviceMemory]] = []
        units: dict[int, DeviceMemory] = {}
        if self.simulated:
            by_identity: dict[int, DeviceMemory] = {}
            for unit_id, device in sorted(self.simulated.items()):
                if not isinstance(device, Device):
                    raise TypeError(f"unit id {unit_id}: {device!r} is not a Device")
                memory = by_identity.get(id(device))
                if memory is None:
                    memory = by_identity[id(device)] = DeviceMemory()
                    self._device_memories.append((device, memory))
                units[unit_id] = memory
        else:
            shared = DeviceMemory()
            units = dict.fromkeys(ALL_UNIT_IDS, shared)
        super().__init__(
            units,
            host=host,
            port=port,
            response_delay_ms=response_delay_ms,
            answer_unknown_units=answer_unknown_units,
            gateway=gateway,
            max_connections=max_connections,
        )
        self.schedule = schedule
        self.updates = 0
        self._ticker: asyncio.Task | None = None
        self._random = random.Random()

    @classmethod
    def from_environment(
        cls: type[_Server], env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> _Server:
        """An instance configured like `python -m virtual_server`: listening on
        VIRTUAL_SERVER_LISTEN_HOST (default VIRTUAL_SERVER_HOST, default localhost) and
        VIRTUAL_SERVER_PORT (default 5020), updated on VIRTUAL_SERVER_UPDATE_CRON_* in TZ,
        answering after VIRTUAL_SERVER_RESPONSE_DELAY_MS, as a gateway if
        VIRTUAL_SERVER_GATEWAY says so, with at most VIRTUAL_SERVER_MAX_CONNECTIONS
        connections. `kwargs` win over the environment and reach the constructor (a
        subclass's own arguments too)."""
        env = os.environ if env is None else env
        run = run_settings(env)
        options: dict[str, Any] = {
            "host": run.listen_host,
            "port": run.port,
            "schedule": UpdateSchedule.from_environment(env),
            "response_delay_ms": run.response_delay_ms,
            "gateway": run.gateway,
            "max_connections": run.max_connections,
        }
        options.update(kwargs)
        return cls(**options)

    # -- the extension contract ------------------------------------------------------------

    @property
    def memory(self) -> DeviceMemory:
        """The memory of the lowest unit id served: for a server built without devices, the
        one memory every unit id answers from."""
        return self.devices[min(self.devices)]

    def set_datastore(self) -> None:
        """Refresh the published values. Override it (without devices) to bridge a source.

        The default updates every device given to the constructor; without devices it puts a
        random FLOAT32 (0-1000) at input registers 0-1, as the original's base class did.
        """
        if not self._device_memories:
            self.set_value(0, as_float32(self._random.uniform(0.0, 1000.0)))
            return
        for device, memory in self._device_memories:
            device.update(memory)

    def set_value(
        self,
        address: int,
        value: float | int,
        *,
        data_type: DataType | int = DataType.FLOAT32,
        function_code: FunctionCode | int = FunctionCode.READ_INPUT_REGISTERS,
        word_order: Order | int = Order.BIG,
        byte_order: Order | int = Order.BIG,
        unit_id: int | None = None,
    ) -> None:
        """Publish one value at `address` (zero-based protocol address), encoded exactly as
        the pipeline decodes a register row with the same data_type, function_code,
        word_order and byte_order. Defaults: FLOAT32 in input registers, big-endian."""
        publish(
            self._memory_of(unit_id),
            {address: value},
            data_type,
            function_code,
            word_order,
            byte_order,
        )

    def set_values(
        self,
        values: Mapping[int, Value],
        *,
        data_type: DataType | int = DataType.FLOAT32,
        function_code: FunctionCode | int = FunctionCode.READ_INPUT_REGISTERS,
        word_order: Order | int = Order.BIG,
        byte_order: Order | int = Order.BIG,
        unit_id: int | None = None,
    ) -> None:
        """Publish several values of one type at once ({address: value}; None = no value),
        so no read sees some of them old and some new."""
        publish(self._memory_of(unit_id), values, data_type, function_code, word_order, byte_order)

    def set_no_value(
        self,
        address: int,
        *,
        data_type: DataType | int = DataType.FLOAT32,
        function_code: FunctionCode | int = FunctionCode.READ_INPUT_REGISTERS,
        unit_id: int | None = None,
        exception_code: int = NO_VALUE_EXCEPTION,
    ) -> None:
        """Publish "no value" at `address`: reads of it are answered with a Modbus exception
        (0x0B by default), so the poller records a gap instead of a made-up 0.0."""
        self._memory_of(unit_id).set_no_value(
            function_code, address, DataType(data_type).words, exception_code
        )

    def _memory_of(self, unit_id: int | None) -> DeviceMemory:
        if unit_id is None:
            return self.memory
        try:
            return self.devices[unit_id]
        except KeyError:
            raise ValueError(f"unit id {unit_id} is not served by this server") from None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Publish the first values, then listen; then refresh on the schedule."""
        if self.running:
            raise RuntimeError(f"{self._name()} already runs")
        await _in_worker_thread(self.set_datastore, f"{self._name()} first update")
        self.updates += 1
        await super().start()
        if self.schedule is not None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            raise RuntimeError("this server runs in its own thread: stop it with stop_thread()")
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        await super().stop(timeout)

    async def _tick_forever(self) -> None:
        assert self.schedule is not None
        due = self.schedule.next_after(time.time())
        while True:
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await _in_worker_thread(self.set_datastore, f"{self._name()} update")
            except Exception:
                logger.exception(
                    "%s: set_datastore() failed; the previous values stay published",
                    self._name(),
                )
            else:
                self.updates += 1
            # Firings missed while a slow update ran are skipped, not run back to back.
            due = self.schedule.next_after(max(due, time.time()))

    def _name(self) -> str:
        return f"virtual Modbus server {self.host}:{self.port}"


async def _in_worker_thread(function: Callable[[], _T], name: str) -> _T:
    """Run `function` in a daemon thread of its own and await its result.

    Not `asyncio.to_thread`: the default executor is joined when the event loop shuts down,
    so an update blocked on a slow source would delay stopping the server by its timeout.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def deliver(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            setter(value)

    def work() -> None:
        try:
            outcome = (future.set_result, function())
        except Exception as error:
            outcome = (future.set_exception, error)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(deliver, *outcome)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await future

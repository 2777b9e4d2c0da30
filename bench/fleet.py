"""The simulated SDM630 fleet, split over separate server processes so that the simulator
is not the bottleneck of what is measured (2 processes by default: more than the machine's
cores only adds contention).

A gateway fleet (`gateway=True`) makes each port an RS-485 gateway: `units_per_port` meters
behind it, one request at a time on its bus, at most `max_connections` connections. Its
ports are never split between processes, so every gateway has all its meters."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Worker

START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Member:
    index: int
    host: str
    port: int
    unit: int


class FleetProcesses:
    def __init__(
        self,
        size: int,
        delay_ms: float,
        *,
        processes: int,
        units_per_port: int,
        log_dir: Path,
        gateway: bool = False,
        max_connections: int = 0,
    ) -> None:
        self.size = size
        self.delay_ms = delay_ms
        self.gateway = gateway
        self.max_connections = max_connections
        # A gateway fleet is split by whole ports (gateways), a plain one by meters.
        self.ports = -(-size // units_per_port)
        self.processes = max(1, min(processes, self.ports if gateway else size))
        self.units_per_port = units_per_port
        self.log_dir = log_dir
        self.workers: list[Worker] = []
        self.members: list[Member] = []

    def start(self) -> FleetProcesses:
        """Start every part, then wait (bounded) for each to list its meters."""
        sizes = self._part_sizes()
        first = 0
        try:
            for part, size in enumerate(sizes):
                argv = [
                    sys.executable,
                    "-m",
                    "bench.fleet_server",
                    f"--size={size}",
                    f"--units-per-port={self.units_per_port}",
                    f"--delay-ms={self.delay_ms:g}",
                    f"--first-index={first}",
                ]
                if self.gateway:
                    argv += ["--gateway", f"--max-connections={self.max_connections}"]
                name = f"fleet part {part + 1}/{self.processes} ({size} meters)"
                shape = "gw-" if self.gateway else ""
                log = self.log_dir / f"fleet-{shape}{self.size}-{self.delay_ms:g}ms-{part}.log"
                self.workers.append(Worker(name, argv, log))
                first += size
            for worker in self.workers:
                message = worker.receive(START_TIMEOUT_S)
                self.members.extend(Member(**m) for m in message["members"])
        except BaseException:
            self.stop()
            raise
        self.members.sort(key=lambda m: m.index)
        return self

    def _part_sizes(self) -> list[int]:
        """Meters per server process: whole ports for a gateway fleet."""
        if not self.gateway:
            base, extra = divmod(self.size, self.processes)
            return [base + (1 if part < extra else 0) for part in range(self.processes)]
        base, extra = divmod(self.ports, self.processes)
        sizes, left = [], self.size
        for part in range(self.processes):
            size = min(left, (base + (1 if part < extra else 0)) * self.units_per_port)
            sizes.append(size)
            left -= size
        return sizes

    def stats(self) -> dict[str, int]:
        """The fleet's counts so far (`ServerStats` of every part added up; `max_in_flight`:
        the most on any one port)."""
        parts = [worker.request("stats", 30)["stats"] for worker in self.workers]
        return {
            key: max(p[key] for p in parts)
            if key == "max_in_flight"
            else sum(p[key] for p in parts)
            for key in parts[0]
        }

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self.workers]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the fleet's processes have used so far."""
        total = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()

    def __enter__(self) -> FleetProcesses:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

"""Child process: runs one method's poll cycles on command, so each method's memory and CPU
are its own (`methods.py` says what each method does).

`python -m bench.worker CONFIG.json` answers `ready`, then one result per `cycle` line on
stdin, and its peak memory on `exit` (or when stdin closes).
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
import traceback
from pathlib import Path

from bench.meters import meter_specs
from bench.methods import BusFloorCycle, FloorCycle, OriginalCycle, OursCycle
from bench.procs import emit
from energymon_pipeline.influx.writer import InfluxTarget


def memory() -> dict:
    status = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                status[key] = int(value.split()[0])  # kB
    return {
        "vmhwm_kb": status.get("VmHWM"),
        "vmrss_kb": status.get("VmRSS"),
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


class Probes:
    """Bench-side instrumentation of ours' child, read per cycle: time in the garbage
    collector, and how many request decoders were compiled (`decode.BlockDecoder`) and how long
    that took. Both wrap, never change, what the product code does."""

    def __init__(self) -> None:
        self.gc_s = 0.0
        self.gc_full = 0
        self.compiled = 0
        self.compile_s = 0.0
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)
        from energymon_pipeline.modbus import decode

        original = decode.BlockDecoder.__init__
        probes = self

        def counting_init(decoder, request) -> None:
            began = time.perf_counter()
            original(decoder, request)
            probes.compiled += 1
            probes.compile_s += time.perf_counter() - began

        decode.BlockDecoder.__init__ = counting_init

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_s += time.perf_counter() - self._gc_started
            self.gc_full += info["generation"] == 2

    def take(self) -> dict:
        taken = {
            "gc_s": self.gc_s,
            "gc_full": self.gc_full,
            "decoders_compiled": self.compiled,
            "decoder_compile_s": self.compile_s,
        }
        self.gc_s = self.compile_s = 0.0
        self.gc_full = self.compiled = 0
        return taken


def build(config: dict):
    meters = meter_specs(config["members"], config.get("max_connections"))
    method = config["method"]
    target = InfluxTarget(
        host=config["influx_host"],
        port=config["influx_port"],
        database=config["database"],
        timeout_s=30.0,
    )
    if method == "ours":
        return OursCycle(meters, target, Path(config["spool_dir"]), config["concurrency"])
    if method == "original":
        cycle = OriginalCycle(meters, target)
        cycle.setup()
        return cycle
    if method == "floor":
        return FloorCycle(meters, config["concurrency"])
    if method == "bus":
        return BusFloorCycle(meters)
    raise ValueError(f"unknown method {method!r}")


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    try:
        cycle = build(config)
    except Exception:
        traceback.print_exc()
        emit({"error": "setup failed (traceback in the log)"})
        sys.exit(1)
    probes = Probes() if config["method"] == "ours" else None
    info = cycle.ready_info() if hasattr(cycle, "ready_info") else {}
    emit({"ready": True, "planned_requests": cycle.planned_requests(), **info, **memory()})
    for line in sys.stdin:
        command = line.strip()
        if command == "exit":
            break
        if command != "cycle":
            emit({"error": f"unknown command {command!r}"})
            continue
        try:
            if probes is not None:
                probes.take()
            result = cycle.run()
            if probes is not None:
                result["probes"] = probes.take()
            emit(result)
        except Exception:
            traceback.print_exc()
            emit({"error": "a cycle failed (traceback in the log)"})
    emit(memory())


if __name__ == "__main__":
    main()

"""Child process measurements that need no fleet:

- `decode`: registers decoded per second on one core (the process pins itself to one CPU),
  the way the reader decodes each response (`np.asarray(words, uint16)` + `decode_block`), on
  the SDM630 plan's two requests, and for comparison on a full 124-register request, on a
  request mixing all 32 layouts (8 data types x word order x byte order) and in bulk
  (`decode_values`).
- `influx --host H --port P`: points per second InfluxDB takes from `InfluxWriter.write`
  (batches of its default 5000 points) and through the spool (`Spool.append` + `flush`, one
  500-meter poll's batch at a time), with realistic SDM630 points.
- `baseline`: what a Dagster run process pays before polling anything: importing the code
  location (`energymon_pipeline.definitions`), its time and memory.

`python -m bench.micro WHAT [...]` prints one protocol line with the results.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.procs import emit

MEASURE_S = 0.4
ROUNDS = 5


def _rate(work, units_per_call: int) -> float:
    """Median over ROUNDS of units per second, each round calling `work` for ~MEASURE_S."""
    work()  # warm-up (and decoder compilation)
    rates = []
    for _ in range(ROUNDS):
        calls = 0
        began = time.perf_counter()
        deadline = began + MEASURE_S
        while True:
            work()
            calls += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        rates.append(units_per_call * calls / (now - began))
    return statistics.median(rates)


def decode() -> dict:
    import numpy as np

    from bench.meters import sdm630_registers
    from energymon_pipeline.modbus.decode import decode_block, decode_values
    from energymon_pipeline.modbus.plan import plan_requests
    from energymon_pipeline.modbus.types import DataType, FunctionCode, ReadRequest, RegisterSpec

    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    rng = np.random.default_rng(0)
    plan = plan_requests(sdm630_registers())
    responses = [rng.integers(0, 0x10000, size=r.count).tolist() for r in plan]
    words_per_poll = sum(r.count for r in plan)
    values_per_poll = sum(len(r.registers) for r in plan)

    def sdm630() -> None:
        for request, words in zip(plan, responses, strict=True):
            decode_block(request, np.asarray(words, dtype=np.uint16))

    floats = tuple(RegisterSpec(f"m{a}", a) for a in range(0, 124, 2))
    full = ReadRequest(FunctionCode.READ_INPUT_REGISTERS, 0, 124, floats)
    full_words = rng.integers(0, 0x10000, size=124).tolist()

    def full_request() -> None:
        decode_block(full, np.asarray(full_words, dtype=np.uint16))

    mixed = _mixed_layout_request(120)
    mixed_words = rng.integers(0, 0x10000, size=mixed.count).tolist()

    def mixed_request() -> None:
        decode_block(mixed, np.asarray(mixed_words, dtype=np.uint16))

    bulk = rng.integers(0, 0x10000, size=1_000_000, dtype=np.uint16)

    def bulk_decode() -> None:
        decode_values(bulk, DataType.FLOAT32)

    sdm630_rate = _rate(sdm630, words_per_poll)
    return {
        "cpu": cpu,
        "sdm630_registers_per_s": sdm630_rate,
        "sdm630_values_per_s": sdm630_rate * values_per_poll / words_per_poll,
        "sdm630_request_words": [r.count for r in plan],
        "full_request_registers_per_s": _rate(full_request, 124),
        "mixed_request_registers": mixed.count,
        "mixed_request_registers_per_s": _rate(mixed_request, mixed.count),
        "bulk_registers_per_s": _rate(bulk_decode, bulk.size),
    }


def _mixed_layout_request(size: int):
    """One read request of about `size` registers whose values cycle through every data type,
    word order and byte order (all 32 layouts), each scaled, so no decoder shortcut applies."""
    from energymon_pipeline.modbus.types import (
        DataType,
        FunctionCode,
        Order,
        ReadRequest,
        RegisterSpec,
    )

    layouts = [(t, w, b) for t in DataType for w in Order for b in Order]
    registers, address = [], 0
    while address + 4 <= size:
        data_type, word_order, byte_order = layouts[len(registers) % len(layouts)]
        registers.append(
            RegisterSpec(
                f"m{address}",
                address,
                data_type,
                word_order=word_order,
                byte_order=byte_order,
                scale=0.1,
            )
        )
        address += data_type.words
    return ReadRequest(FunctionCode.READ_INPUT_REGISTERS, 0, address, tuple(registers))


def _sdm630_lines(meters: int, samples: int) -> list[list[str]]:
    """`samples` batches of one poll of `meters` SDM630s each, as the pipeline formats them."""
    import numpy as np
    import pandas as pd

    from bench.meters import sdm630_registers
    from energymon_pipeline.influx.points import reading_lines

    registers = sdm630_registers()
    batches = []
    start = pd.Timestamp("2024-01-01", tz="UTC")
    rng = np.random.default_rng(0)
    for sample in range(samples):
        rows = meters * len(registers)
        frame = pd.DataFrame(
            {
                "time": [start + pd.Timedelta(minutes=sample)] * rows,
                "meter_id": np.repeat(np.arange(1, meters + 1), len(registers)),
                "description": np.repeat(
                    [f"bench meter {i}" for i in range(1, meters + 1)], len(registers)
                ),
                "meter_type": "sdm630",
                "measurement": [r.measurement for r in registers] * meters,
                "unit": [r.unit for r in registers] * meters,
                "value": rng.uniform(0, 1000, rows),
            }
        )
        frame["time"] = frame["time"].astype("datetime64[ns, UTC]")
        batches.append(reading_lines(frame))
    return batches


def influx(host: str, port: int) -> dict:
    from energymon_pipeline.influx.spool import Spool
    from energymon_pipeline.influx.writer import InfluxTarget, InfluxWriter

    batches = _sdm630_lines(500, 24)  # 24 polls of 500 meters: 324,000 points
    lines = [line for batch in batches for line in batch]
    half = len(batches) // 2

    target = InfluxTarget(host=host, port=port, database="bench_write", timeout_s=60.0)
    with InfluxWriter(target) as writer:
        writer.ensure_database()
        writer.write(lines[:5000])  # warm-up, not counted
        direct = lines[: half * len(batches[0])]
        began = time.perf_counter()
        writer.write(direct)
        writer_rate = len(direct) / (time.perf_counter() - began)

    spool_target = InfluxTarget(host=host, port=port, database="bench_spool", timeout_s=60.0)
    with tempfile.TemporaryDirectory(prefix="bench-spool-") as folder:
        spool = Spool(Path(folder), 512 * 1024**2, 86400)
        with InfluxWriter(spool_target) as writer:
            writer.ensure_database()
            points = 0
            began = time.perf_counter()
            for batch in batches[half:]:
                spool.append(batch)
                result = spool.flush(writer)
                if not result.ok:
                    raise RuntimeError(f"spool flush failed: {result.error}")
                points += result.sent_points
            spool_rate = points / (time.perf_counter() - began)
    return {
        "writer_points_per_s": writer_rate,
        "writer_points": len(direct),
        "writer_batch": 5000,
        "spool_points_per_s": spool_rate,
        "spool_points": points,
        "spool_batch": len(batches[0]),
    }


def baseline() -> dict:
    from bench.worker import memory

    began, cpu = time.perf_counter(), time.process_time()
    import energymon_pipeline.definitions  # noqa: F401

    return {
        "import_seconds": time.perf_counter() - began,
        "import_cpu_seconds": time.process_time() - cpu,
        **memory(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.micro")
    parser.add_argument("what", choices=["decode", "influx", "baseline"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8086)
    args = parser.parse_args()
    if args.what == "decode":
        emit(decode())
    elif args.what == "influx":
        emit(influx(args.host, args.port))
    else:
        emit(baseline())


if __name__ == "__main__":
    main()

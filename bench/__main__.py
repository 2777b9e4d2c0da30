"""`uv run python -m bench`: the poll-path benchmark (see bench/README.md).

Starts a private influxd, then per configuration (meters x device delay) a simulated SDM630
fleet in separate processes and one child process per method (ours, the original's method,
the transport floor), runs their cycles interleaved, then the same on a fleet of simulated
RS-485 gateways (ours, the original's method, the bus floor; with the gateways' counts of
refused connections), and prints the results tables; a full run also writes
docs/performance.md. Every process it starts is stopped on the way out, errors and
Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench import cold as cold_runs
from bench import page, report
from bench.fleet import FleetProcesses
from bench.influxd import Influxd, influxd_version
from bench.meters import sdm630_registers
from bench.procs import BenchError, Worker
from bench.report import GATEWAY_METHODS, METHODS, ConfigResult, Run

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "performance.md"
READY_TIMEOUT_S = 120.0
MICRO_TIMEOUT_S = 300.0
#: Per-request allowance when bounding how long a cycle may take (seconds).
REQUEST_ALLOWANCE_S = 0.01
SCALE_CHECK_REPEATS = 3
#: A pause after each cycle on a gateway fleet, outside the timing, so that a gateway has
#: seen the last method's connections close before the next method connects.
GATEWAY_SETTLE_S = 0.5


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers >= 1")
    return values


def _float_list(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list") from None
    if not values or any(not 0 <= v <= 10_000 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give delays of 0-10000 ms")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the poll path against the original's method and the transport "
        "floor on a simulated SDM630 fleet, with a private influxd.",
    )
    parser.add_argument("--meters", type=_int_list, help="fleet sizes (default 10,100,500)")
    parser.add_argument("--delays", type=_float_list, help="device delays in ms (default 0,20)")
    parser.add_argument("--repeats", type=int, help="timed cycles per method (default 5)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a fast sanity run: 10 and 100 meters, 5 gateways of 10, 2 repeats; prints only "
        "(unless --output)",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="ours and the floor (64)")
    parser.add_argument(
        "--fleet-processes",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="simulator processes (default: 2, or 1 on a one-core machine)",
    )
    parser.add_argument(
        "--units-per-port", type=int, default=50, help="simulated meters per port (default 50)"
    )
    parser.add_argument(
        "--original-budget-s",
        type=float,
        default=120.0,
        help="time allowed for the original's timed cycles per configuration; it runs fewer "
        "repeats (at least 3) when its warm-up cycle says they would take longer (120)",
    )
    parser.add_argument(
        "--scale-check",
        type=int,
        help="also run ours and the floor (not the original: minutes per cycle) on this many "
        "meters at the largest delay, for the per-meter cost of section 3; 0 turns it off "
        "(default 5000; off with --quick)",
    )
    parser.add_argument(
        "--gateways",
        type=int,
        help="gateway fleet: this many simulated RS-485 gateways (one request at a time each, "
        "one connection each), read by ours, the original's method and the bus floor; 0 turns "
        "it off (default 50; 5 with --quick)",
    )
    parser.add_argument(
        "--meters-per-gateway",
        type=int,
        default=10,
        help="meters behind each gateway, unit ids 1..N (default 10)",
    )
    parser.add_argument(
        "--gateway-delay-ms",
        type=float,
        default=20.0,
        help="the gateway fleet's time per request, ms (default 20)",
    )
    parser.add_argument(
        "--gateway-connections",
        type=int,
        default=1,
        help="connections each simulated gateway accepts; it closes the rest at once (1)",
    )
    parser.add_argument(
        "--cold-meters",
        type=_int_list,
        help="cold runs: poll_meters_job launched as production launches it (a Dagster instance, "
        "the run in its own process) on this many meters at 20 ms, beside an empty job and the "
        "transport floor (default 10,100,500; 10 with --quick)",
    )
    parser.add_argument(
        "--cold-repeats", type=int, help="timed cold runs per size (default 3; 2 with --quick)"
    )
    parser.add_argument("--no-cold", action="store_true", help="no cold runs")
    parser.add_argument(
        "--cold-only",
        action="store_true",
        help="only the cold runs: prints their tables, writes no page (with --save-json: the "
        "cold-run baseline's format, bench/cold_baseline.json)",
    )
    parser.add_argument(
        "--product",
        type=Path,
        default=ROOT,
        help="folder whose energymon_pipeline the cold runs use (default: this checkout; a git "
        "worktree of another commit measures that commit)",
    )
    parser.add_argument(
        "--cold-no-bytecode",
        action="store_true",
        help="the cold runs' processes ignore the installed .pyc files (the standard library's "
        "excepted) and compile every module they import (the state before `make sync` compiled "
        "bytecode)",
    )
    parser.add_argument("--output", type=Path, help=f"page to write (default {DEFAULT_OUTPUT})")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--save-json", type=Path, help="also save the raw results here")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: render the page from results saved with --save-json",
    )
    parser.add_argument("--keep-temp", action="store_true", help="keep logs and influxd data")
    args = parser.parse_args(argv)
    if args.quick:
        args.meters = args.meters or [10, 100]
        args.repeats = args.repeats or 2
    args.meters = args.meters or [10, 100, 500]
    args.delays = args.delays if args.delays is not None else [0.0, 20.0]
    args.repeats = args.repeats or 5
    if args.scale_check is None:
        args.scale_check = 0 if args.quick else 5000
    if args.gateways is None:
        args.gateways = 5 if args.quick else 50
    if args.gateways < 0 or args.gateway_connections < 1 or args.gateway_delay_ms < 0:
        parser.error("--gateways must be >= 0, --gateway-connections >= 1, the delay >= 0")
    if not 1 <= args.meters_per_gateway <= 247:
        parser.error("--meters-per-gateway must be 1-247")
    if args.scale_check < 0:
        parser.error("--scale-check must be >= 0")
    if args.repeats < 1 or args.concurrency < 1 or args.fleet_processes < 1:
        parser.error("--repeats, --concurrency and --fleet-processes must be >= 1")
    if not 1 <= args.units_per_port <= 247:
        parser.error("--units-per-port must be 1-247")
    args.cold_meters = args.cold_meters or ([10] if args.quick else [10, 100, 500])
    args.cold_repeats = args.cold_repeats or (2 if args.quick else 3)
    if args.no_cold and args.cold_only:
        parser.error("--no-cold and --cold-only exclude each other")
    if args.cold_repeats < 1:
        parser.error("--cold-repeats must be >= 1")
    args.product = args.product.resolve()
    if not (args.product / "energymon_pipeline" / "definitions.py").is_file():
        parser.error(f"--product {args.product}: no energymon_pipeline/definitions.py there")
    if args.no_write or args.cold_only:
        args.output = None
    elif args.output is None and not args.quick:
        args.output = DEFAULT_OUTPUT
    return args


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cycle_timeout(method: str, meters: int, delay_ms: float, concurrency: int) -> float:
    """A generous bound on one cycle, so a hang ends the run instead of blocking it."""
    per_request = delay_ms / 1000 + REQUEST_ALLOWANCE_S
    if method == "original":
        return 60 + 3 * meters * 27 * per_request / 10
    return 60 + 3 * meters * 3 * per_request / min(concurrency, meters)


def micro(what: str, temp: Path, *extra: str) -> dict:
    worker = Worker(
        f"micro {what}",
        [sys.executable, "-m", "bench.micro", what, *extra],
        temp / f"micro-{what}.log",
    )
    try:
        return worker.receive(MICRO_TIMEOUT_S)
    finally:
        worker.stop()


def run_config(
    meters: int,
    delay_ms: float,
    args: argparse.Namespace,
    influx: Influxd,
    temp: Path,
    methods: tuple[str, ...] = METHODS,
    repeats: int | None = None,
    gateway: dict | None = None,
) -> ConfigResult:
    """One configuration. `gateway` ({"gateways", "meters_per_gateway", "max_connections"})
    makes the fleet one of RS-485 gateways, whose counts (connections refused, requests
    served, requests in flight) are taken around every cycle."""
    shape = "gw-" if gateway else ""
    tag = f"{shape}{meters}m-{delay_ms:g}ms"
    repeats_wanted = repeats or args.repeats
    what = (
        f"{gateway['gateways']} gateways x {gateway['meters_per_gateway']} meters"
        if gateway
        else f"{meters} meters"
    )
    log(f"{what}, {delay_ms:g} ms ({', '.join(methods)}): starting the fleet")
    workers: dict[str, Worker] = {}
    with FleetProcesses(
        meters,
        delay_ms,
        processes=args.fleet_processes,
        units_per_port=gateway["meters_per_gateway"] if gateway else args.units_per_port,
        log_dir=temp,
        gateway=gateway is not None,
        max_connections=gateway["max_connections"] if gateway else 0,
    ) as fleet:

        def cycle(method: str) -> dict:
            before = fleet.stats() if gateway else None
            fleet_cpu = fleet.cpu_seconds()
            result = workers[method].request("cycle", timeouts[method])
            result["fleet_cpu_s"] = fleet.cpu_seconds() - fleet_cpu
            if before is not None:
                time.sleep(GATEWAY_SETTLE_S)
                after = fleet.stats()
                result["fleet"] = {
                    key: after[key] if key == "max_in_flight" else after[key] - before[key]
                    for key in after
                }
            return result

        try:
            for method in methods:
                config = {
                    "method": method,
                    "members": [vars(member) for member in fleet.members],
                    "influx_host": influx.host,
                    "influx_port": influx.port,
                    "database": f"bench_{method}_{shape}{meters}_{delay_ms:g}".replace(
                        ".", "_"
                    ).replace("-", "_"),
                    "spool_dir": str(temp / f"spool-{tag}"),
                    "concurrency": args.concurrency,
                    # Behind a gateway: the registry's default (one connection per link). The
                    # plain fleet's ports stand for meters with an address each.
                    "max_connections": None if gateway else args.units_per_port,
                }
                path = temp / f"{method}-{tag}.json"
                path.write_text(json.dumps(config), encoding="utf-8")
                workers[method] = Worker(
                    f"{method} ({what}, {delay_ms:g} ms)",
                    [sys.executable, "-m", "bench.worker", str(path)],
                    temp / f"{method}-{tag}.log",
                )
            ready = {m: w.receive(READY_TIMEOUT_S) for m, w in workers.items()}
            timeouts = {m: cycle_timeout(m, meters, delay_ms, args.concurrency) for m in workers}
            cold = {}
            for method in workers:
                cold[method] = cycle(method)
                log(f"  warm-up {method}: {cold[method]['seconds']:.3f} s")
            repeats = dict.fromkeys(methods, repeats_wanted)
            if "original" in cold:
                expected = cold["original"]["seconds"] * repeats_wanted
                if expected > args.original_budget_s:
                    repeats["original"] = max(
                        min(3, repeats_wanted),
                        int(args.original_budget_s // max(cold["original"]["seconds"], 1e-9)),
                    )
            result = ConfigResult(
                meters=meters,
                delay_ms=delay_ms,
                planned={m: ready[m]["planned_requests"] for m in methods},
                cold=cold,
                cycles={m: [] for m in methods},
            )
            if gateway:
                result.gateway = {
                    **gateway,
                    "values_per_meter": len(sdm630_registers()),
                    "busiest_bus_requests": ready["bus"]["busiest_bus_requests"]
                    if "bus" in ready
                    else None,
                }
            result.memory["ours_ready"] = ready["ours"]
            for round_ in range(repeats_wanted):
                shift = round_ % len(methods)
                order = methods[shift:] + methods[:shift]
                for method in order:
                    if round_ >= repeats[method]:
                        continue
                    result.cycles[method].append(cycle(method))
                log(
                    f"  round {round_ + 1}/{repeats_wanted}: "
                    + ", ".join(
                        f"{m} {result.cycles[m][-1]['seconds']:.3f} s"
                        for m in methods
                        if len(result.cycles[m]) > round_
                    )
                )
            for method, worker in workers.items():
                result.memory[method] = worker.request("exit", 30)
        finally:
            for worker in workers.values():
                worker.stop()
    for note in result.failures:
        log(f"  {'expected (one connection per meter)' if gateway else 'WARNING'} {note}")
    if gateway:
        log(
            "  refused connections per cycle: "
            + ", ".join(f"{m} {result.refused(m):g}" for m in methods)
        )
    log(
        "  "
        + ", ".join(f"{m} {result.seconds(m):.3f} s" for m in methods)
        + f"; peak RSS {result.rss_mb:.0f} MB"
    )
    return result


def cold(args: argparse.Namespace, influx: Influxd, temp: Path) -> list[dict]:
    """The cold runs (bench/cold.py) at the target's device delay."""
    if args.product != ROOT:
        log(f"cold runs with the product code of {args.product}")
    return [
        cold_runs.cold_size(
            meters,
            delay_ms=report.TARGETS["target_delay_ms"],
            repeats=args.cold_repeats,
            influx=influx,
            temp=temp,
            product=args.product,
            fleet_processes=args.fleet_processes,
            units_per_port=args.units_per_port,
            concurrency=args.concurrency,
            bytecode=not args.cold_no_bytecode,
        )
        for meters in args.cold_meters
    ]


#: Options that only say where results go; the page records the command without them.
_OUTPUT_OPTIONS = ("--output", "--save-json", "--from-json")
_OUTPUT_FLAGS = ("--no-write", "--keep-temp")


def measuring_command(argv: list[str]) -> str:
    """The command line as it matters for the numbers: output options left out."""
    kept: list[str] = []
    skip_value = False
    for arg in argv:
        if skip_value:
            skip_value = False
            continue
        if arg in _OUTPUT_FLAGS or arg.split("=", 1)[0] in _OUTPUT_OPTIONS:
            skip_value = arg in _OUTPUT_OPTIONS  # "--output PATH": drop PATH too
            continue
        kept.append(arg)
    return shlex.join(["uv", "run", "python", "-m", "bench", *kept])


def show(run: Run, output: Path | None) -> None:
    tables = [page.cold_table, page.cold_stages_table, page.cold_verdicts_table] if run.cold else []
    if run.configs:  # none with --cold-only
        tables += [page.results_table, page.gateway_table] if run.gateways else [page.results_table]
        tables += [page.verdicts_table, page.stages_table]
    for table in tables:
        print(table(run))
        print()
    if not run.configs:
        return
    print(
        f"decode: {run.decode['sdm630_registers_per_s'] / 1e6:.2f} M registers/s (SDM630, one "
        f"core); InfluxDB: {run.influx['writer_points_per_s']:.0f} points/s (writer), "
        f"{run.influx['spool_points_per_s']:.0f} points/s (spool)"
    )
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(page.page(run), encoding="utf-8")
        log(f"wrote {output}")


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM (and SIGHUP) end the run like Ctrl-C: every finally block stops what it started."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    if args.from_json is not None:
        show(report.run_from_json(args.from_json.read_text(encoding="utf-8")), args.output)
        return 0
    started = time.monotonic()
    command = measuring_command(sys.argv[1:] if argv is None else argv)
    temp = Path(tempfile.mkdtemp(prefix="energymon-bench-"))
    (temp / "influxd").mkdir()
    influx: Influxd | None = None
    failed = True
    try:
        log(f"logs and data in {temp}")
        influx = Influxd(temp / "influxd")
        influx.start()
        log(f"influxd on {influx.url}")
        machine = report.machine_info(influxd_version(influx.binary))
        configs, gateways = [], []
        if not args.cold_only:
            configs = [
                run_config(meters, delay, args, influx, temp)
                for delay in args.delays
                for meters in args.meters
            ]
            if args.scale_check and args.scale_check > max(args.meters):
                configs.append(
                    run_config(
                        args.scale_check,
                        max(args.delays),
                        args,
                        influx,
                        temp,
                        methods=("ours", "floor"),
                        repeats=SCALE_CHECK_REPEATS,
                    )
                )
            if args.gateways:
                gateways.append(
                    run_config(
                        args.gateways * args.meters_per_gateway,
                        args.gateway_delay_ms,
                        args,
                        influx,
                        temp,
                        methods=GATEWAY_METHODS,
                        gateway={
                            "gateways": args.gateways,
                            "meters_per_gateway": args.meters_per_gateway,
                            "max_connections": args.gateway_connections,
                        },
                    )
                )
        cold_results = [] if args.no_cold else cold(args, influx, temp)
        decode, influx_rates, baseline = {}, {}, {}
        if not args.cold_only:
            log("decode throughput (one core)")
            decode = micro("decode", temp)
            log("InfluxDB write throughput")
            influx_rates = micro("influx", temp, f"--host={influx.host}", f"--port={influx.port}")
            log("run process baseline (importing the code location)")
            baseline = micro("baseline", temp)
        run = Run(
            configs=configs,
            gateways=gateways,
            decode=decode,
            influx=influx_rates,
            baseline=baseline,
            machine=machine,
            repeats=args.repeats,
            concurrency=args.concurrency,
            fleet_processes=args.fleet_processes,
            units_per_port=args.units_per_port,
            original_budget_s=args.original_budget_s,
            command=command,
            cold=cold_results,
            cold_product={
                **cold_runs.product_info(args.product),
                "bytecode": not args.cold_no_bytecode,
            }
            if cold_results
            else {},
            duration_s=time.monotonic() - started,
        )
        if args.save_json is not None:
            args.save_json.write_text(report.run_to_json(run), encoding="utf-8")
            log(f"saved {args.save_json}")
        show(run, args.output)
        failed = False
    except BenchError as error:
        log(f"failed: {error}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        failed = False  # nothing to look into: no need to keep the logs
        return 130
    finally:
        if influx is not None:
            influx.stop()
        if args.keep_temp or failed:
            log(f"kept {temp} (logs)")
        else:
            shutil.rmtree(temp, ignore_errors=True)
    log(f"done in {(time.monotonic() - started) / 60:.1f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

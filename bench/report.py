"""Results -> the printed table and docs/performance.md.

The page is generated whole by `uv run python -m bench`; what it says about limits and scale is
worked out from the numbers of the same run, so it cannot drift from them.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import textwrap
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("pymodbus", "numpy", "pandas", "pandera", "influxdb", "requests", "dagster")
METHODS = ("ours", "original", "floor")
#: Points per meter and poll: the 27 readings and the `energymon_poll` health point.
POINTS_PER_METER = 28
#: How much of the minute a poll run should use, leaving room for slow or dead meters
#: (a dead meter holds a concurrency slot for timeout x (1 + retries) = 6 s by default).
RUN_BUDGET_S = 30.0
MINUTE_S = 60.0

TARGETS = {
    "requests_per_meter": 3,
    "vs_original": 20.0,
    "vs_floor": 1.5,
    "decode": 2e6,
    "rss_mb": 400.0,
    "target_meters": 500,
    "target_delay_ms": 20.0,
}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class ConfigResult:
    """Everything measured for one (meters, delay) configuration."""

    meters: int
    delay_ms: float
    planned: dict[str, int]
    cold: dict[str, dict]
    cycles: dict[str, list[dict]] = field(default_factory=dict)
    memory: dict[str, dict] = field(default_factory=dict)

    def seconds(self, method: str) -> float:
        return median([c["seconds"] for c in self.cycles.get(method, [])])

    def ran(self, method: str) -> bool:
        return bool(self.cycles.get(method))

    def requests(self, method: str) -> int | None:
        counts = [c["requests"] for c in self.cycles.get(method, [])]
        return int(median(counts)) if counts else self.planned.get(method)

    def repeats(self, method: str) -> int:
        return len(self.cycles.get(method, []))

    def stage(self, name: str) -> float:
        return median([c["stages"].get(name, 0.0) for c in self.cycles["ours"]])

    def cpu(self, method: str = "ours") -> float:
        return median([c["cpu_seconds"] for c in self.cycles.get(method, [])])

    def fleet_cpu(self, method: str) -> float:
        """CPU seconds the simulator processes used during one of `method`'s cycles."""
        return median([c.get("fleet_cpu_s", float("nan")) for c in self.cycles.get(method, [])])

    @property
    def vs_original(self) -> float:
        """NaN when the original's method was not run for this configuration."""
        return self.seconds("original") / self.seconds("ours")

    @property
    def vs_floor(self) -> float:
        return self.seconds("ours") / self.seconds("floor")

    def round_ratios(self, numerator: str, denominator: str) -> list[float]:
        """numerator s / denominator s of each round in which both ran (same minutes)."""
        tops, bottoms = self.cycles.get(numerator, []), self.cycles.get(denominator, [])
        # The original may have run fewer rounds: pair the rounds both ran.
        return [a["seconds"] / b["seconds"] for a, b in zip(tops, bottoms, strict=False)]

    @property
    def readings_per_s(self) -> float:
        written = median([c["written"] for c in self.cycles["ours"]])
        return written / self.seconds("ours")

    @property
    def rss_mb(self) -> float:
        return self.memory["ours"]["vmhwm_kb"] / 1024

    @property
    def failures(self) -> list[str]:
        """Cycles in which some meter failed, per method (a benchmark of failures is void)."""
        notes = []
        for method, cycles in self.cycles.items():
            bad = [c for c in [self.cold.get(method), *cycles] if c and c.get("meters_failed")]
            if bad:
                errors = "; ".join(bad[0].get("errors") or [])
                notes.append(f"{method}: {len(bad)} cycle(s) with failed meters ({errors})")
            bad_writes = [c for c in cycles if c.get("write_error")]
            if bad_writes:
                notes.append(f"{method}: write failed: {bad_writes[0]['write_error']}")
        return notes


@dataclass
class Run:
    configs: list[ConfigResult]
    decode: dict
    influx: dict
    baseline: dict
    machine: dict
    repeats: int
    concurrency: int
    fleet_processes: int
    units_per_port: int
    original_budget_s: float
    command: str
    duration_s: float = 0.0


def run_to_json(run: Run) -> str:
    return json.dumps(asdict(run), indent=1)


def run_from_json(text: str) -> Run:
    data = json.loads(text)
    data["configs"] = [ConfigResult(**c) for c in data["configs"]]
    return Run(**data)


# -- machine ----------------------------------------------------------------------------------


def machine_info(influxd_version: str) -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gb = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    memory_gb = int(line.split()[1]) / 1024**2
                    break
    except OSError:
        pass
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "packages": versions,
        "influxd": influxd_version,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# -- formatting -------------------------------------------------------------------------------


def _s(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _x(value: float) -> str:
    return "n/a" if value != value else f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def _big(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k"
    return f"{value:.0f}"


def _ms(value: float) -> str:
    return f"{value * 1000:.0f}"


def results_table(run: Run) -> str:
    rows = [
        "| meters | delay | requests per cycle: ours (original, floor) | cycle s: ours "
        "| cycle s: original | cycle s: floor | ours vs original (original s / ours s) "
        "| ours vs floor (ours s / floor s) | readings per s | peak RSS |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in run.configs:
        if not c.ran("original"):
            original = "not run"
        elif c.repeats("original") < c.repeats("ours"):
            original = f"{_s(c.seconds('original'))} ({c.repeats('original')} runs)"
        else:
            original = _s(c.seconds("original"))
        requests = f"{c.requests('ours')} ({c.requests('original') or '-'}, {c.requests('floor')})"
        rows.append(
            f"| {c.meters} | {c.delay_ms:g} ms | {requests} "
            f"| {_s(c.seconds('ours'))} | {original} | {_s(c.seconds('floor'))} "
            f"| {_x(c.vs_original)} | {_x(c.vs_floor)} | {_big(c.readings_per_s)} "
            f"| {c.rss_mb:.0f} MB |"
        )
    return "\n".join(rows)


def _probe(cycle: dict, name: str) -> float:
    return cycle.get("probes", {}).get(name, 0.0)


def stages_table(run: Run) -> str:
    rows = [
        "| meters | delay | read + decode | validate | line protocol | spool append "
        "| InfluxDB write | total | CPU s | CPU ms per meter | in GC s "
        "| decoders compiled (s) | first cycle s | first cycle: decoders compiled (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in run.configs:
        cycles = c.cycles["ours"]
        cold = c.cold["ours"]
        compiled = median([_probe(x, "decoders_compiled") for x in cycles])
        compile_s = median([_probe(x, "decoder_compile_s") for x in cycles])
        rows.append(
            f"| {c.meters} | {c.delay_ms:g} ms | {_s(c.stage('read'))} | {_s(c.stage('validate'))} "
            f"| {_s(c.stage('lines'))} | {_s(c.stage('spool'))} | {_s(c.stage('write'))} "
            f"| {_s(c.seconds('ours'))} | {_s(c.cpu())} | {c.cpu() / c.meters * 1000:.2f} "
            f"| {_s(median([_probe(x, 'gc_s') for x in cycles]))} "
            f"| {compiled:.0f} ({_s(compile_s)}) | {_s(cold['seconds'])} "
            f"| {_probe(cold, 'decoders_compiled'):.0f} ({_s(_probe(cold, 'decoder_compile_s'))}) |"
        )
    return "\n".join(rows)


# -- targets ----------------------------------------------------------------------------------


@dataclass
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: not measured in this run

    #: Rounds fell on both sides of the target: the verdict could go either way on a rerun.
    marginal: bool = False

    @property
    def mark(self) -> str:
        if self.met is None:
            return "not measured"
        mark = "met" if self.met else "**missed**"
        return f"{mark} (marginal: rounds on both sides)" if self.marginal else mark


def _config(run: Run, meters: int, delay_ms: float) -> ConfigResult | None:
    for c in run.configs:
        if c.meters == meters and c.delay_ms == delay_ms:
            return c
    return None


def _with_range(value: float, per_round: list[float]) -> str:
    if len(per_round) < 2:
        return _x(value)
    return f"{_x(value)} (rounds {_x(min(per_round))} to {_x(max(per_round))})"


def _straddles(per_round: list[float], target: float) -> bool:
    return bool(per_round) and min(per_round) <= target <= max(per_round)


def verdicts(run: Run) -> list[Verdict]:
    out = []
    per_meter = [c.requests("ours") / c.meters for c in run.configs]
    original = [c.requests("original") / c.meters for c in run.configs if c.ran("original")]
    out.append(
        Verdict(
            f"requests per SDM630 cycle <= {TARGETS['requests_per_meter']} (original 27+)",
            f"ours {max(per_meter):g}, original {min(original, default=float('nan')):g}"
            if per_meter
            else "n/a",
            max(per_meter) <= TARGETS["requests_per_meter"] if per_meter else None,
        )
    )
    big = _config(run, TARGETS["target_meters"], TARGETS["target_delay_ms"])
    where = f"{TARGETS['target_meters']} meters, {TARGETS['target_delay_ms']:g} ms"
    out.append(
        Verdict(
            f"{where}: ours >= {TARGETS['vs_original']:g}x faster than the original's method",
            _with_range(big.vs_original, big.round_ratios("original", "ours")) if big else "n/a",
            big.vs_original >= TARGETS["vs_original"] if big else None,
            marginal=_straddles(big.round_ratios("original", "ours"), TARGETS["vs_original"])
            if big
            else False,
        )
    )
    out.append(
        Verdict(
            f"{where}: ours within {TARGETS['vs_floor']:g}x of the transport floor",
            _with_range(big.vs_floor, big.round_ratios("ours", "floor")) if big else "n/a",
            big.vs_floor <= TARGETS["vs_floor"] if big else None,
            marginal=_straddles(big.round_ratios("ours", "floor"), TARGETS["vs_floor"])
            if big
            else False,
        )
    )
    rate = run.decode["sdm630_registers_per_s"]
    out.append(
        Verdict(
            "decode >= 2 M registers/s on one core",
            f"{rate / 1e6:.2f} M registers/s (SDM630 responses, as the reader decodes them)",
            rate >= TARGETS["decode"],
        )
    )
    at_target = [c for c in run.configs if c.meters == TARGETS["target_meters"]]
    rss = max((c.rss_mb for c in at_target), default=None)
    out.append(
        Verdict(
            f"peak RSS at {TARGETS['target_meters']} meters < {TARGETS['rss_mb']:g} MB",
            f"{rss:.0f} MB" if rss is not None else "n/a",
            rss < TARGETS["rss_mb"] if rss is not None else None,
        )
    )
    return out


def verdicts_table(run: Run) -> str:
    rows = ["| target | measured | |", "|---|---|---|"]
    rows += [f"| {v.target} | {v.measured} | {v.mark} |" for v in verdicts(run)]
    return "\n".join(rows)


# -- scale --------------------------------------------------------------------------------


@dataclass
class Capacity:
    small: ConfigResult
    large: ConfigResult
    cpu_per_meter_s: float
    latency_per_meter_s: float
    start_s: float
    meters_per_run: int
    meters_hard_limit: int
    rss_per_meter_kb: float
    rss_at_capacity_mb: float
    influx_meters_per_minute: int

    @property
    def per_meter_s(self) -> float:
        return max(self.cpu_per_meter_s, self.latency_per_meter_s)


def _two_largest(run: Run) -> tuple[ConfigResult, ConfigResult] | None:
    """The two largest fleets measured at the largest delay."""
    delay = max((c.delay_ms for c in run.configs), default=None)
    points = sorted((c for c in run.configs if c.delay_ms == delay), key=lambda c: c.meters)
    return (points[-2], points[-1]) if len(points) >= 2 else None


def capacity(run: Run) -> Capacity | None:
    """How many meters one poll run serves per minute, from the largest fleet measured at the
    largest delay: CPU time per meter (what a run's single event loop thread must spend; the
    wall time here is inflated by the simulator sharing the cores, real meters are elsewhere),
    unless the device latency spread over the read concurrency costs more."""
    pair = _two_largest(run)
    if pair is None:
        return None
    small, large = pair
    delay = large.delay_ms
    cpu_per_meter = large.cpu() / large.meters
    requests_per_meter = large.requests("ours") / large.meters
    latency_per_meter = requests_per_meter * delay / 1000 / run.concurrency
    per_meter = max(cpu_per_meter, latency_per_meter)
    cold_extra = max(0.0, large.cold["ours"]["seconds"] - large.seconds("ours"))
    start = run.baseline.get("import_seconds", 0.0) + cold_extra
    meters_per_run = max(0, int((RUN_BUDGET_S - start) / per_meter))
    hard = max(0, int((MINUTE_S - start) / per_meter))
    rss_per_meter_kb = max(
        0.0,
        (large.memory["ours"]["vmhwm_kb"] - small.memory["ours"]["vmhwm_kb"])
        / (large.meters - small.meters),
    )
    # A real run: the code location's memory, plus what the poll path added on top of the
    # libraries in the bench child, plus the per-meter growth past the largest fleet measured.
    poll_path_kb = large.memory["ours"]["vmhwm_kb"] - large.memory["ours_ready"]["vmrss_kb"]
    rss_at_capacity_kb = (
        run.baseline.get("vmhwm_kb", 0)
        + poll_path_kb
        + rss_per_meter_kb * max(0, meters_per_run - large.meters)
    )
    influx_rate = run.influx.get("spool_points_per_s", 0.0)
    return Capacity(
        small=small,
        large=large,
        cpu_per_meter_s=cpu_per_meter,
        latency_per_meter_s=latency_per_meter,
        start_s=start,
        meters_per_run=meters_per_run,
        meters_hard_limit=hard,
        rss_per_meter_kb=rss_per_meter_kb,
        rss_at_capacity_mb=rss_at_capacity_kb / 1024,
        influx_meters_per_minute=int(influx_rate * MINUTE_S / POINTS_PER_METER),
    )


# -- the page ---------------------------------------------------------------------------------


def analysis(run: Run) -> str:
    """What limits ours now, from this run's numbers (and the probes in ours' child)."""
    parts = []
    big = _config(run, TARGETS["target_meters"], TARGETS["target_delay_ms"])
    if big is not None:
        read, floor = big.stage("read"), big.seconds("floor")
        rest = big.seconds("ours") - read
        parts.append(
            f"- **Ours vs the floor** ({big.meters} meters, {big.delay_ms:g} ms: "
            f"{_x(big.vs_floor)}). Of ours' {_s(big.seconds('ours'))} s, reading and decoding "
            f"take {_s(read)} s against the floor's {_s(floor)} s for the same "
            f"{big.requests('floor')} requests; the remaining {_s(rest)} s are validation "
            f"({_s(big.stage('validate'))} s), line protocol ({_s(big.stage('lines'))} s), the "
            f"spool append ({_s(big.stage('spool'))} s) and the InfluxDB write "
            f"({_s(big.stage('write'))} s), which the floor does not do at all and which run "
            f"after the last response. What ours adds is per-value Python work (one `Reading` "
            f"object per value in `reader._MeterSession._read`, the DataFrame, one line of text "
            f"per point) and one HTTP write, on the one core a poll run's event loop uses. "
            f"The simulator shares the {run.machine['cpus']} cores: its processes used "
            f"{_s(big.fleet_cpu('floor'))} s of CPU during a floor cycle and "
            f"{_s(big.fleet_cpu('ours'))} s during one of ours, so during the read the client "
            f"competes with them for CPU, as it would not with remote meters."
        )
    small = min(run.configs, key=lambda c: (c.meters, c.delay_ms), default=None)
    if small is not None and small.meters < TARGETS["target_meters"]:
        fixed = small.seconds("ours") - small.stage("read")
        parts.append(
            f"- **Small fleets** show a larger ratio to the floor ({small.meters} meters, "
            f"{small.delay_ms:g} ms: {_x(small.vs_floor)}) because a cycle has fixed costs "
            f"that do not grow with the fleet: validation, the spool's fsyncs and one HTTP "
            f"write, {_s(fixed)} s together here, against a floor of a few round trips."
        )
    thrash = [
        c
        for c in run.configs
        if median([_probe(x, "decoders_compiled") for x in c.cycles["ours"]]) > 0
    ]
    if thrash:
        c = max(thrash, key=lambda c: c.meters)
        compiled = median([_probe(x, "decoders_compiled") for x in c.cycles["ours"]])
        parts.append(
            f"- **Decoders recompiled every cycle** at {c.meters} meters: each warm cycle "
            f"compiled {compiled:.0f} request "
            f"decoders ({_s(median([_probe(x, 'decoder_compile_s') for x in c.cycles['ours']]))}"
            f" s). `decode.block_decoder` caches decoders by the identity of the request "
            f"object, in an LRU of 2048 entries, and every meter's `MeterPlanner` has its own "
            f"request objects: past 1024 two-request meters every lookup misses and every "
            f"request's decoder is rebuilt, although all SDM630s plan the same two requests."
        )
    cold = [c for c in run.configs if c.meters == TARGETS["target_meters"]]
    if cold:
        c = cold[-1]
        first = c.cold["ours"]
        parts.append(
            f"- **The first cycle of a process** ({c.meters} meters, {c.delay_ms:g} ms) took "
            f"{_s(first['seconds'])} s against {_s(c.seconds('ours'))} s warm: validation "
            f"{_s(first['stages'].get('validate', 0))} s against "
            f"{_s(c.stage('validate'))} s (pandera builds its checks on first use), "
            f"{_probe(first, 'decoders_compiled'):.0f} decoders compiled "
            f"({_s(_probe(first, 'decoder_compile_s'))} s), and the first write creates the "
            f"database. Dagster starts a new process for every run, so every real poll run "
            f"is a first cycle, after importing the code location "
            f"({_s(run.baseline.get('import_seconds', float('nan')))} s, measured below)."
        )
    pair = _two_largest(run)
    if pair is not None:
        lighter, gc_heavy = pair
        gc_s = median([_probe(x, "gc_s") for x in gc_heavy.cycles["ours"]])
        cpu_small = lighter.cpu() / lighter.meters * 1000
        parts.append(
            f"- **Garbage collection** took {_s(gc_s)} s of ours' {_s(gc_heavy.seconds('ours'))}"
            f" s at {gc_heavy.meters} meters: every value read becomes several Python objects "
            f"that live until the write, so the collector's full passes get both more frequent "
            f"and longer as the fleet grows: CPU per meter rose from {cpu_small:.2f} ms at "
            f"{lighter.meters} meters to {gc_heavy.cpu() / gc_heavy.meters * 1000:.2f} ms at "
            f"{gc_heavy.meters} ({gc_heavy.delay_ms:g} ms)."
        )
    zero = [c for c in run.configs if c.delay_ms == 0]
    if zero:
        c = max(zero, key=lambda c: c.meters)
        parts.append(
            f"- **Without device delay** ({c.meters} meters, 0 ms: ours {_s(c.seconds('ours'))} "
            f"s, floor {_s(c.seconds('floor'))} s, {_x(c.vs_floor)}) every method is CPU-bound, "
            f"and the client, the simulator processes and influxd share the box's "
            f"{run.machine['cpus']} cores, so the ratios there mix our cost with the "
            f"simulator's. Ours spends {c.cpu() / c.meters * 1000:.2f} ms of CPU per meter "
            f"(all stages), the floor {c.cpu('floor') / c.meters * 1000:.2f} ms."
        )
        if c.ran("original"):
            parts.append(
                f"- **The original's method at 0 ms** is closer than at 20 ms "
                f"({_x(c.vs_original)} at {c.meters} meters): with no device delay a round "
                f"trip on loopback costs a fraction of a millisecond, so 27 requests per meter "
                f"cost little more than 2. Real meters and RS-485 gateways answer in tens of "
                f"milliseconds, which is what the 20 ms rows show."
            )
    return "\n".join(parts)


def scale_section(run: Run) -> str:
    cap = capacity(run)
    if cap is None:
        return (
            "Not enough configurations in this run for the per-meter cost (it needs two meter "
            "counts at one delay)."
        )
    large, smaller = cap.large, cap.small
    influx = run.influx
    thrash = median([_probe(x, "decoder_compile_s") for x in large.cycles["ours"]])
    thrash_note = (
        f" That figure includes {_s(thrash)} s per cycle of decoder recompilation (see above), "
        "which a fix to the decoder cache removes."
        if median([_probe(x, "decoders_compiled") for x in large.cycles["ours"]]) > 0
        else ""
    )
    groups_for_100k = -(-100_000 // max(1, cap.meters_per_run))
    cpu_ms = cap.cpu_per_meter_s * 1000
    requests_per_meter = large.requests("ours") // large.meters
    per_line = (
        f"{1000 / (requests_per_meter * large.delay_ms):.0f}" if large.delay_ms > 0 else "n/a"
    )
    return f"""\
### One poll run on this box

Measured at {large.meters:,} meters and {large.delay_ms:g} ms: a cycle of ours took
{_s(large.seconds("ours"))} s of wall time and {_s(large.cpu())} s of CPU, **{cpu_ms:.2f} ms of
CPU per meter** for the whole path (the floor alone took {_s(large.seconds("floor"))} s: at
that size the client and the simulator processes compete for the 2 cores, so the wall time
overstates what remote meters would cost; CPU time is the figure that carries over).{thrash_note}
A poll run is one process with one event loop thread, so it uses at most one core; the other
core is left to influxd, the Dagster daemon, webserver and code server. Device latency costs
{requests_per_meter} requests x {large.delay_ms:g} ms
/ {run.concurrency} (the read concurrency, `ENERGYMON_READ_CONCURRENCY`) =
{cap.latency_per_meter_s * 1000:.2f} ms of wall time per meter, overlapped with the CPU work as
long as the concurrency covers it: slow gateways call for a higher concurrency before they call
for another run.

Every poll run is a fresh process: importing the code location took
{_s(run.baseline.get("import_seconds", float("nan")))} s here, and the first (cold) cycle's
extra cost another {_s(cap.start_s - run.baseline.get("import_seconds", 0.0))} s. A run must end
before its group's next tick (the schedule skips a tick while the previous run of the group is
still going) and should leave room for meters that do not answer (each holds a concurrency slot
for timeout x (1 + retries), 6 s by default). Sizing a run to half the minute
({RUN_BUDGET_S:g} s) of one core:

- **one poll run serves about {cap.meters_per_run:,} SDM630 meters per minute** on this box
  (about {cap.meters_hard_limit:,} before it overruns the minute outright). This extrapolates
  the CPU per meter measured at {large.meters:,} meters; that cost grew from
  {smaller.cpu() / smaller.meters * 1000:.2f} ms at {smaller.meters} meters (garbage
  collection and per-value objects grow with the fleet), so treat it as an upper bound and
  measure a planned size with `uv run python -m bench --scale-check N` before relying on it.
- Peak memory of such a run: about {cap.rss_at_capacity_mb:.0f} MB (the code location's
  {run.baseline.get("vmhwm_kb", 0) / 1024:.0f} MB, plus {cap.rss_per_meter_kb:.0f} kB per
  meter, measured between the two largest fleets).

Real RS-485 gateways answer one request at a time per serial line: meters behind one gateway
are read one after another whatever the concurrency, so there the gateway, not the poller, sets
the pace (at {large.delay_ms:g} ms and {requests_per_meter} requests per meter: at most
{per_line} meters per second per line).

### Past one run: meter groups

Past that, the meters are split into groups, each polled by its own runs on its own schedule.
It is configuration, not code:

```sh
# each meter's group is energy_meters.poll_group (set it with --group, or in the table)
uv run energymon meters add --host 10.0.1.20 --port 502 --unit 1 --type sdm630 \\
    --description "hall A" --group north
uv run energymon meters add --host 10.0.2.20 --port 502 --unit 1 --type sdm630 \\
    --description "hall B" --group south

# one schedule per listed group (poll_meters_schedule_north, ..._south, ..._default);
# `default` stands for the meters without a group
ENERGYMON_POLL_GROUPS=north,south,default
```

Each group's runs read only that group's meters and carry the tag `energymon/poll_group`; the
run coordinator (`dagster.yaml`) lets one poll run per group go at a time and groups run in
parallel, so a slow or unreachable group never delays another. At the size above, 100,000
meters would be about {groups_for_100k} groups, each needing about one core and the memory
above for a few seconds to half a minute every minute.

Where the runs execute is Dagster's run launcher, set in `dagster.yaml` without any change to
energymon: the default launcher runs them as processes of the code server (this box: 2 cores,
so a second group's run competes with the services); `DockerRunLauncher` (dagster-docker) starts
each run in its own container and `K8sRunLauncher` (dagster-k8s) as its own Kubernetes Job, on
whichever machine has room (docs/deployment.md, "Scale-out"). Groups should follow the network
(a site, a gateway subnet), so a run sits close to its meters and an outage stays in one group.

### The next limit: InfluxDB

Every meter adds {POINTS_PER_METER} points per poll ({POINTS_PER_METER - 1} readings and its
`energymon_poll` health point). The influxd on this box took
{_big(influx["writer_points_per_s"])} points/s from `InfluxWriter` ({influx["writer_batch"]:,}-point
batches) and {_big(influx["spool_points_per_s"])} points/s through the spool (fsync'd append,
then flush; {influx["spool_batch"]:,}-point batches, one 500-meter poll each), while sharing
the 2 cores with the writer: about **{cap.influx_meters_per_minute:,} meters per minute** for
one InfluxDB 1.x, whatever the number of poll runs feeding it. Past that, InfluxDB is the limit:
give it a machine of its own (`INFLUXDB_HOSTNAME`), then split groups over several InfluxDB
instances or databases (InfluxDB 1.x open source does not cluster). The spool keeps readings
while InfluxDB falls behind: a slow write delays data, it does not lose it."""


_LIST_ITEM = re.compile(r"^([-*]|\d+\.) ")


def reflow(markdown: str, width: int = 100) -> str:
    """Re-wrap paragraphs and list items (numbers of any length are filled into the prose);
    headings, tables and code blocks stay as they are."""
    out: list[str] = []
    item: list[str] = []
    marker = ""

    def flush() -> None:
        nonlocal marker
        if item:
            text = " ".join(part.strip() for part in item)
            out.extend(
                textwrap.wrap(
                    text,
                    width=width,
                    initial_indent=marker,
                    subsequent_indent=" " * len(marker),
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )
            item.clear()
        marker = ""

    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            flush()
            in_code = not in_code
            out.append(line)
        elif in_code or not line.strip() or line.startswith(("#", "|")):
            flush()
            out.append(line)
        elif match := _LIST_ITEM.match(line):
            flush()
            marker = match.group(0)
            item.append(line[len(marker) :])
        else:
            item.append(line)
    flush()
    return "\n".join(out) + "\n"


def page(run: Run) -> str:
    return reflow(_page(run))


def _page(run: Run) -> str:
    machine = run.machine
    packages = ", ".join(f"{name} {ver}" for name, ver in machine["packages"].items())
    decode = run.decode
    influx = run.influx
    baseline = run.baseline
    notes = [note for c in run.configs for note in c.failures]
    failure_text = (
        "\n**Failures during the run (these rows are not valid measurements):**\n"
        + "".join(f"- {n}\n" for n in notes)
        if notes
        else ""
    )
    fewer = [
        c for c in run.configs if c.ran("original") and c.repeats("original") < c.repeats("ours")
    ]
    skipped = [c for c in run.configs if not c.ran("original")]
    skipped_text = (
        "Rows marked *not run* are scale checks (`--scale-check`): ours and the floor only, "
        f"{max(c.repeats('ours') for c in skipped)} cycles, since the original's method would "
        "take minutes per cycle there.\n"
        if skipped
        else ""
    )
    fewer_text = (
        "The original's method ran fewer times where marked: its cycles are long (up to "
        f"{max(c.seconds('original') for c in fewer):.0f} s), so the harness caps it at about "
        f"{run.original_budget_s:g} s per configuration (at least 3 runs); its median is of "
        "those runs.\n"
        if fewer
        else ""
    )
    return f"""\
# Performance

Generated by `{run.command}` on {machine["date"]} ({run.duration_s / 60:.1f} minutes); do not
edit by hand, run it again (bench/README.md). Every number on this page comes from that one
run: ours, the original's method and the transport floor were measured side by side, on the
same simulated fleet, in the same minutes. These machines are shared and noisy: read the ratios,
not the absolute times, and never turn them into a timed test.

## Results

SDM630 meters with the full 27-register map, simulated by the virtual server's fleet in
{run.fleet_processes} separate processes ({run.units_per_port} meters per port, one TCP
connection per meter per cycle, as ours opens them); device response delay 0 ms (the
simulator as fast as it goes) and 20 ms (a typical meter or RS-485 gateway). Cycle seconds are
the median of {run.repeats} cycles, after one warm-up cycle per method that is not counted.
{fewer_text}{skipped_text}Ours and the floor read with concurrency {run.concurrency} (the default);
the original's method reads 10 meters at a time.

{results_table(run)}

- **cycle s: ours**: the real poll path end to end: plan, read, decode, validate, line protocol,
  spool append and write to a real influxd (and the health points the write op adds).
- **original**: the 2020 system's method: one request per register, 10 meters in flight, each
  value decoded alone, each meter's points written by its job.
- **floor**: our plan's requests sent by a bare pymodbus loop with our concurrency, nothing
  decoded or written: the fastest this transport can go.
- **readings per s**: values written to InfluxDB per second of ours' cycle.
- **peak RSS**: the high-water mark (VmHWM) of the child process that ran ours for that
  configuration (all its cycles), without Dagster (see the run process baseline below).
{failure_text}
## Targets

{verdicts_table(run)}

## Where ours spends its time

Medians per stage of ours' cycles; the first cycle of each process is shown apart.

{stages_table(run)}

{analysis(run)}

## Decode and InfluxDB write throughput

- **Decode**, one core (the process pinned to CPU {decode["cpu"]}):
  {decode["sdm630_registers_per_s"] / 1e6:.2f} M registers/s
  ({decode["sdm630_values_per_s"] / 1e6:.2f} M values/s) on the SDM630 plan's responses
  ({" and ".join(str(w) for w in decode["sdm630_request_words"])} registers) decoded as the
  reader does it (`np.asarray(words, uint16)` then `decode_block`);
  {decode["full_request_registers_per_s"] / 1e6:.1f} M registers/s on a full 124-register
  FLOAT32 request; {decode["bulk_registers_per_s"] / 1e6:.0f} M registers/s in bulk
  (`decode_values`, 1 M registers). Per response, the fixed cost of a call (the list from
  pymodbus to an array, the decoder lookup) dominates: larger requests decode faster per
  register.
- **InfluxDB writes** ({machine["influxd"].split(" (")[0]} on this box, sharing its cores with the
  writer): {_big(influx["writer_points_per_s"])} points/s through `InfluxWriter.write`
  ({influx["writer_points"]:,} SDM630 points in batches of {influx["writer_batch"]:,});
  {_big(influx["spool_points_per_s"])} points/s through the spool (append with fsync, then
  flush; {influx["spool_points"]:,} points in batches of {influx["spool_batch"]:,}).
- **Run process baseline**: importing the code location (`energymon_pipeline.definitions`,
  what every Dagster run process does first) took {_s(baseline["import_seconds"])} s
  ({_s(baseline["import_cpu_seconds"])} s CPU) and {baseline["vmhwm_kb"] / 1024:.0f} MB. A real
  poll run's peak memory is about this plus the poll path's share of the peak RSS column.

## Scale beyond one machine

{scale_section(run)}

## Machine

- {machine["cpus"]} CPUs ({machine["usable_cpus"]} usable by the harness), {machine["cpu_model"]},
  {machine["memory_gb"]:.0f} GB RAM, {machine["os"]}
- {machine["implementation"]} {machine["python"]}; {packages}
- {machine["influxd"]}

## How it was measured

- The harness (`bench/`) starts its own influxd (temp folder, loopback only), then for each
  configuration the fleet's server processes (`virtual_server.fleet.Fleet`, simulated SDM630s,
  no value refresh during the run), then one child process per method. Each child builds its
  meters once, runs one warm-up cycle, then the cycles the harness asks for; the harness
  interleaves the methods round by round (rotating their order) so that drift in the
  machine's load hits all three alike.
- Ours is the library code the Dagster ops call, in the ops' order, without Dagster itself:
  `read_meters` (planning, reading, decoding), `readings.validate` (pandera), `reading_lines`
  and the per-meter health points, `Spool.append`, `Spool.flush` through `InfluxWriter`, the
  spool backlog point: the write op's default path (with `INFLUXDB_RAW_RETENTION` set it adds a
  second spool and write). Meters are built from the shipped `sdm630` profile with the registry's
  defaults (3 s timeout, 1 retry, default plan options); loading them from the registry's
  database is not part of the cycle.
- The original's method is reimplemented in `bench/methods.py`: a pool of 10 threads (at most
  10 meters in flight), one job per meter with pymodbus's synchronous client: connect, one
  read per register (2 registers for a FLOAT32), decode each value with `struct`, close, then
  write the meter's points as JSON through influxdb-python, stamped by the server as the
  original did. It does less than ours per value (no validation, no spool), so the ratio
  understates the difference in what each delivers.
- The floor sends exactly our plan's requests with pymodbus's asyncio client, one connection
  per meter, concurrency {run.concurrency}, and checks nothing but the exception flag.
- Requests per cycle are counted by each client; every cycle's meters are checked for
  failures, and failures are listed above the targets when there are any.
"""

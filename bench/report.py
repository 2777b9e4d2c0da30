"""Benchmark results and the numbers that follow from them.

The data model saved with `--save-json`, the machine it ran on, the outcome of each target,
what limits a poll run and how many meters one run serves: every figure the page states is
computed here, from the numbers of one run. bench/page.py only puts them into words, so the
page cannot say what the run did not measure.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("pymodbus", "numpy", "pandas", "pandera", "influxdb", "requests", "dagster")
METHODS = ("ours", "original", "floor")
#: On a gateway fleet: ours, the original's method (one connection per meter) and the bus
#: floor measured by a bare loop (bench/methods.py BusFloorCycle).
GATEWAY_METHODS = ("ours", "original", "bus")
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
    # The gateway fleet: 500 SDM630 as 50 gateways of 10, 20 ms per request, one connection.
    "gateway_refused": 0,
    "vs_bus_floor": 1.2,
    "gateways": 50,
    "meters_per_gateway": 10,
    "gateway_delay_ms": 20.0,
}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def probe(cycle: dict, name: str) -> float:
    """One instrumentation figure of a cycle of ours (bench/worker.py); 0 when absent."""
    return cycle.get("probes", {}).get(name, 0.0)


@dataclass
class ConfigResult:
    """Everything measured for one (meters, delay) configuration."""

    meters: int
    delay_ms: float
    planned: dict[str, int]
    cold: dict[str, dict]
    cycles: dict[str, list[dict]] = field(default_factory=dict)
    memory: dict[str, dict] = field(default_factory=dict)
    #: A gateway fleet's shape ({"gateways", "meters_per_gateway", "max_connections",
    #: "values_per_meter", "busiest_bus_requests"}); empty for the plain fleet.
    gateway: dict = field(default_factory=dict)

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

    def cpu_ms_per_meter(self, method: str = "ours") -> float:
        return self.cpu(method) / self.meters * 1000

    @property
    def failures(self) -> list[str]:
        """Per method, cycles in which some meter failed or the write failed (a benchmark of
        failures is void)."""
        notes = []
        for method in self.cycles:
            bad = self.failed_cycles(method)
            if bad:
                errors = "; ".join(bad[0].get("errors") or [])
                notes.append(f"{method}: {len(bad)} cycle(s) with failed meters ({errors})")
            bad_writes = self.failed_writes(method)
            if bad_writes:
                notes.append(f"{method}: write failed: {bad_writes[0]['write_error']}")
        return notes

    def fleet_cpu(self, method: str) -> float:
        """CPU seconds the simulator processes used during one of `method`'s cycles."""
        return median([c.get("fleet_cpu_s", float("nan")) for c in self.cycles.get(method, [])])

    def probe(self, name: str) -> float:
        """The median of an instrumentation figure over ours' warm cycles."""
        return median([probe(c, name) for c in self.cycles["ours"]])

    @property
    def after_read_s(self) -> float:
        """What ours' cycle spends after the last response: validation, line protocol, the
        spool and the write."""
        return self.seconds("ours") - self.stage("read")

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

    def failed_cycles(self, method: str) -> list[dict]:
        """The cold and warm cycles of `method` in which some meter failed."""
        cycles = [self.cold.get(method), *self.cycles.get(method, [])]
        return [c for c in cycles if c and c.get("meters_failed")]

    def failed_writes(self, method: str) -> list[dict]:
        return [c for c in self.cycles.get(method, []) if c.get("write_error")]

    # -- gateway fleets (the simulated gateways' counts, taken around each cycle) --------------

    def fleet_count(self, method: str, key: str) -> float:
        """The median per warm cycle of a gateway count: connections_refused,
        connections_accepted, requests_served."""
        return median([c["fleet"][key] for c in self.cycles.get(method, []) if "fleet" in c])

    def refused(self, method: str) -> float:
        """Connections the gateways refused per cycle of `method` (median)."""
        return self.fleet_count(method, "connections_refused")

    def refused_total(self, method: str) -> int:
        """Every connection refused during `method`'s cycles, the warm-up included."""
        cycles = [self.cold.get(method), *self.cycles.get(method, [])]
        return sum(c["fleet"]["connections_refused"] for c in cycles if c and "fleet" in c)

    def max_in_flight(self, method: str) -> int:
        """The most requests one gateway had in flight at once (1 on a bus)."""
        cycles = [self.cold.get(method), *self.cycles.get(method, [])]
        return max((c["fleet"]["max_in_flight"] for c in cycles if c and "fleet" in c), default=0)

    @property
    def values_expected(self) -> int:
        """Values one cycle should write: every register of every meter."""
        return self.meters * self.gateway.get("values_per_meter", 0)

    def values_written(self, method: str) -> float:
        """Values written per cycle (median; NaN for the bus floor, which writes nothing)."""
        return median([c["written"] for c in self.cycles.get(method, []) if "written" in c])

    def values_lost(self, method: str) -> float:
        return self.values_expected - self.values_written(method)

    def requests_per_meter(self, method: str) -> float:
        requests = self.requests(method)
        return float("nan") if requests is None else requests / self.meters

    @property
    def bus_floor_s(self) -> float:
        """The bus floor computed from the plan: the busiest gateway's planned requests back to
        back at the device delay, every gateway at once (no round trip, no processing)."""
        busiest = self.gateway.get("busiest_bus_requests")
        return float("nan") if busiest is None else busiest * self.delay_ms / 1000

    def cpu_ms_per_request(self, method: str = "ours") -> float:
        """CPU per request of `method`'s whole cycle (ms; all its stages)."""
        requests = self.requests(method)
        return self.cpu(method) / requests * 1000 if requests else float("nan")

    def planned_per_meter(self, method: str) -> float:
        return self.planned.get(method, 0) / self.meters

    def bus_overhead_ms(self, seconds: float) -> float:
        """What each request on the busiest gateway cost beyond the device delay, if `seconds`
        were spent on its requests back to back."""
        busiest = self.gateway.get("busiest_bus_requests") or 0
        return (seconds - self.bus_floor_s) / busiest * 1000 if busiest else float("nan")

    def vs_bus_floor(self, method: str = "ours") -> float:
        return self.seconds(method) / self.bus_floor_s

    def bus_floor_rounds(self, method: str = "ours") -> list[float]:
        return [c["seconds"] / self.bus_floor_s for c in self.cycles.get(method, [])]


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
    #: Gateway fleets (`--gateways`): apart from `configs`, which the plain fleet's figures
    #: (capacity, the other targets) are computed from.
    gateways: list[ConfigResult] = field(default_factory=list)
    #: Cold runs per fleet size (bench/cold.py: {"meters", "delay_ms", "warmup", "cold",
    #: "empty", "floor"}), and the product code they ran (cold.product_info).
    cold: list[dict] = field(default_factory=list)
    cold_product: dict = field(default_factory=dict)


def run_to_json(run: Run) -> str:
    return json.dumps(asdict(run), indent=1)


def run_from_json(text: str) -> Run:
    data = json.loads(text)
    data["configs"] = [ConfigResult(**c) for c in data["configs"]]
    data["gateways"] = [ConfigResult(**c) for c in data.get("gateways", [])]
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


# -- which configurations say what ---------------------------------------------------------------


def config_at(run: Run, meters: int, delay_ms: float) -> ConfigResult | None:
    for c in run.configs:
        if c.meters == meters and c.delay_ms == delay_ms:
            return c
    return None


def target_config(run: Run) -> ConfigResult | None:
    """The configuration the speed targets are set for."""
    return config_at(run, TARGETS["target_meters"], TARGETS["target_delay_ms"])


def two_largest(run: Run) -> tuple[ConfigResult, ConfigResult] | None:
    """The two largest fleets measured at the largest delay."""
    delay = max((c.delay_ms for c in run.configs), default=None)
    points = sorted((c for c in run.configs if c.delay_ms == delay), key=lambda c: c.meters)
    return (points[-2], points[-1]) if len(points) >= 2 else None


def smallest(run: Run) -> ConfigResult | None:
    """The smallest fleet, when it is smaller than the target's (its fixed costs show)."""
    small = min(run.configs, key=lambda c: (c.meters, c.delay_ms), default=None)
    return small if small is not None and small.meters < TARGETS["target_meters"] else None


def decoder_thrash(run: Run) -> ConfigResult | None:
    """The largest fleet whose warm cycles still compiled request decoders, if any."""
    thrash = [c for c in run.configs if c.probe("decoders_compiled") > 0]
    return max(thrash, key=lambda c: c.meters) if thrash else None


def first_cycle(run: Run) -> ConfigResult | None:
    """The last configuration at the target's fleet size, for its cold cycle."""
    at_target = [c for c in run.configs if c.meters == TARGETS["target_meters"]]
    return at_target[-1] if at_target else None


def largest_without_delay(run: Run) -> ConfigResult | None:
    zero = [c for c in run.configs if c.delay_ms == 0]
    return max(zero, key=lambda c: c.meters) if zero else None


def gateway_config(run: Run) -> ConfigResult | None:
    """The gateway fleet the gateway targets are read from: the target's shape (50 gateways
    of 10 at 20 ms) when it ran, else the largest gateway fleet measured."""
    for c in run.gateways:
        if (
            c.gateway["gateways"] == TARGETS["gateways"]
            and c.gateway["meters_per_gateway"] == TARGETS["meters_per_gateway"]
            and c.delay_ms == TARGETS["gateway_delay_ms"]
        ):
            return c
    return max(run.gateways, key=lambda c: c.meters, default=None)


def scale_checks(run: Run) -> list[ConfigResult]:
    """Configurations the original's method did not run (`--scale-check`)."""
    return [c for c in run.configs if not c.ran("original")]


def capped_original(run: Run) -> list[ConfigResult]:
    """Configurations where the original's method ran fewer cycles than ours (its budget)."""
    return [
        c for c in run.configs if c.ran("original") and c.repeats("original") < c.repeats("ours")
    ]


# -- targets ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One target against this run: `value` as measured (NaN: not measured) and `met` (None:
    not measured); where the target is a ratio of two methods, the ratio of each round."""

    value: float
    met: bool | None
    target: float = float("nan")
    per_round: list[float] = field(default_factory=list)
    #: The original's figure beside ours, where the target compares the two.
    original: float = float("nan")

    @property
    def marginal(self) -> bool:
        """Rounds fell on both sides of the target: the verdict could go either way."""
        return bool(self.per_round) and min(self.per_round) <= self.target <= max(self.per_round)


def outcomes(run: Run) -> dict[str, Outcome]:
    """Keyed like TARGETS: requests_per_meter, vs_original, vs_floor, decode, rss_mb,
    gateway_refused, vs_bus_floor."""
    nothing = Outcome(float("nan"), None)
    per_meter = [c.requests("ours") / c.meters for c in run.configs]
    original = [c.requests("original") / c.meters for c in run.configs if c.ran("original")]
    out = {
        "requests_per_meter": Outcome(
            max(per_meter),
            max(per_meter) <= TARGETS["requests_per_meter"],
            original=min(original, default=float("nan")),
        )
        if per_meter
        else nothing
    }
    big = target_config(run)
    if big is None:
        out["vs_original"] = out["vs_floor"] = nothing
    else:
        target = TARGETS["vs_original"]
        out["vs_original"] = Outcome(
            big.vs_original, big.vs_original >= target, target, big.round_ratios("original", "ours")
        )
        target = TARGETS["vs_floor"]
        out["vs_floor"] = Outcome(
            big.vs_floor, big.vs_floor <= target, target, big.round_ratios("ours", "floor")
        )
    rate = run.decode["sdm630_registers_per_s"]
    out["decode"] = Outcome(rate, rate >= TARGETS["decode"])
    at_target = [c for c in run.configs if c.meters == TARGETS["target_meters"]]
    rss = max((c.rss_mb for c in at_target), default=None)
    out["rss_mb"] = nothing if rss is None else Outcome(rss, rss < TARGETS["rss_mb"])
    gw = gateway_config(run)
    if gw is None or not gw.ran("ours"):
        out["gateway_refused"] = out["vs_bus_floor"] = nothing
    else:
        refused = gw.refused_total("ours")
        out["gateway_refused"] = Outcome(
            refused,
            refused <= TARGETS["gateway_refused"],
            TARGETS["gateway_refused"],
            original=gw.refused("original"),
        )
        target = TARGETS["vs_bus_floor"]
        ratio = gw.vs_bus_floor("ours")
        out["vs_bus_floor"] = Outcome(ratio, ratio <= target, target, gw.bus_floor_rounds("ours"))
    return out


# -- scale --------------------------------------------------------------------------------


@dataclass
class Capacity:
    small: ConfigResult
    large: ConfigResult
    cpu_per_meter_s: float
    latency_per_meter_s: float
    requests_per_meter: int
    #: What a poll run pays before its first meter: importing the code location, plus the
    #: cold cycle's extra cost (`cold_extra_s`).
    start_s: float
    cold_extra_s: float
    meters_per_run: int
    meters_hard_limit: int
    rss_per_meter_kb: float
    rss_at_capacity_mb: float
    influx_meters_per_minute: int

    def groups_for(self, meters: int) -> int:
        """How many meter groups (runs per minute) `meters` meters need at this capacity."""
        return -(-meters // max(1, self.meters_per_run))

    @property
    def meters_per_second_per_line(self) -> float | None:
        """How fast one RS-485 line serves meters at this delay (None without delay)."""
        if self.large.delay_ms <= 0:
            return None
        return 1000 / (self.requests_per_meter * self.large.delay_ms)


def capacity(run: Run) -> Capacity | None:
    """How many meters one poll run serves per minute, from the largest fleet measured at the
    largest delay: CPU time per meter (what a run's single event loop thread must spend; the
    wall time here is inflated by the simulator sharing the cores, real meters are elsewhere),
    unless the device latency spread over the read concurrency costs more."""
    pair = two_largest(run)
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
        requests_per_meter=large.requests("ours") // large.meters,
        start_s=start,
        cold_extra_s=start - run.baseline.get("import_seconds", 0.0),
        meters_per_run=meters_per_run,
        meters_hard_limit=hard,
        rss_per_meter_kb=rss_per_meter_kb,
        rss_at_capacity_mb=rss_at_capacity_kb / 1024,
        influx_meters_per_minute=int(influx_rate * MINUTE_S / POINTS_PER_METER),
    )


# -- cold runs (bench/cold.py) --------------------------------------------------------------------

#: Issue 17's targets for a cold poll run, at 500 SDM630 at 20 ms: its time above the empty
#: run's within 2x the transport floor, CPU per meter at most half the baseline's (measured
#: before the cold path's work: bench/cold_baseline.json), peak RSS under 250 MB, the first
#: sample within 1 s of its time.
COLD_TARGETS = {
    "meters": 500,
    "vs_floor": 2.0,
    "cpu_share": 0.5,
    "rss_mb": 250.0,
    "late_s": 1.0,
}
#: Cold runs measured before issue 17's work (bench/README.md says how): with the product code
#: of that commit as its Makefile installed it here (no bytecode compiled: every run process
#: compiled every module it imported), the target's baseline; and the same code with the
#: environment's bytecode compiled (`make sync` since 4f1943e), to tell the two changes apart.
COLD_BASELINES = {
    "before": Path(__file__).resolve().parent / "cold_baseline.json",
    "before, bytecode compiled": Path(__file__).resolve().parent / "cold_baseline_bytecode.json",
}


@dataclass
class ColdSize:
    """The cold runs of one fleet size: medians of the counted runs (the warm-up left out)."""

    data: dict

    @property
    def meters(self) -> int:
        return self.data["meters"]

    @property
    def delay_ms(self) -> float:
        return self.data["delay_ms"]

    def runs(self, kind: str) -> list[dict]:
        return self.data.get(kind, [])

    def seconds(self, kind: str) -> float:
        """Median seconds of `kind`: cold, empty (launch to RUN_SUCCESS) or floor (a cycle)."""
        return median([r["seconds"] for r in self.runs(kind)])

    @property
    def excess_s(self) -> float:
        """What a cold poll run takes beyond Dagster's own floor for a run."""
        return self.seconds("cold") - self.seconds("empty")

    @property
    def vs_floor(self) -> float:
        return self.excess_s / self.seconds("floor")

    def cpu(self, kind: str = "cold") -> float:
        values = [r["cpu_s"] for r in self.runs(kind) if r.get("cpu_s") is not None]
        return median(values)

    def cpu_ms_per_meter(self) -> float:
        return self.cpu() / self.meters * 1000

    def rss_mb(self, kind: str = "cold") -> float:
        """The highest VmHWM of the counted runs' processes."""
        values = [r["vmhwm_kb"] for r in self.runs(kind) if r.get("vmhwm_kb")]
        return max(values) / 1024 if values else float("nan")

    def events(self, kind: str = "cold") -> float:
        return median([r["events"] for r in self.runs(kind)])

    @property
    def late_s(self) -> float | None:
        """How late the scheduled run's first sample was (cold.scheduled_run), as its read op
        reported it; None when it reports none (or no scheduled run was made)."""
        return self.data.get("scheduled", {}).get("first_sample_late_s")

    @property
    def scheduled_lead_s(self) -> float | None:
        return self.data.get("scheduled", {}).get("due_after_launch_s")

    @property
    def scheduled_done_s(self) -> float | None:
        """The scheduled run's time from its second to RUN_SUCCESS: its launch-to-success
        time less its wait for the second (None when no scheduled run was made)."""
        scheduled = self.data.get("scheduled", {})
        if scheduled.get("seconds") is None or scheduled.get("due_after_launch_s") is None:
            return None
        return scheduled["seconds"] - scheduled["due_after_launch_s"]

    def cpu_above_empty_ms_per_meter(self) -> float:
        """The cold run's CPU beyond the empty run's, per meter: what energymon's own code
        (imports, definitions, the ops) costs the run process."""
        return (self.cpu() - self.cpu("empty")) / self.meters * 1000

    def median_run(self, kind: str = "cold") -> dict | None:
        """The run whose time is the median (the lower one of an even count): its stages add
        up to its total, as medians per stage would not."""
        runs = sorted(self.runs(kind), key=lambda r: r["seconds"])
        return runs[(len(runs) - 1) // 2] if runs else None

    def stage_names(self, kind: str = "cold") -> list[str]:
        names: list[str] = []
        for run in self.runs(kind):
            names += [name for name in run["stages"] if name not in names]
        # "rest" last, whatever order the ops came in.
        return [n for n in names if n != "rest"] + (["rest"] if "rest" in names else [])

    def stage(self, name: str, kind: str = "cold") -> float:
        """A stage of the median run (`median_run`)."""
        run = self.median_run(kind)
        return float("nan") if run is None else run["stages"].get(name, 0.0)

    @property
    def failures(self) -> list[str]:
        """Cold runs (the warm-up included) in which some meter failed."""
        runs = [self.data.get("warmup", {}).get("cold"), *self.runs("cold")]
        bad = [r for r in runs if r and r.get("meters_failed")]
        return [f"{self.meters} meters: {len(bad)} cold run(s) with failed meters"] if bad else []


def cold_sizes(run: Run) -> list[ColdSize]:
    return [ColdSize(c) for c in run.cold]


def cold_at(run: Run | None, meters: int) -> ColdSize | None:
    if run is None:
        return None
    return next((c for c in cold_sizes(run) if c.meters == meters), None)


def cold_baselines() -> dict[str, Run]:
    """The saved baselines (COLD_BASELINES) that exist, by label; the first is the target's."""
    found = {}
    for label, path in COLD_BASELINES.items():
        try:
            found[label] = run_from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
    return found


def cold_baseline() -> Run | None:
    """The target's baseline: today's cold runs, before issue 17's work."""
    return cold_baselines().get("before")


def cold_outcomes(run: Run, baseline: Run | None) -> dict[str, Outcome]:
    """Keyed like COLD_TARGETS: vs_floor, cpu_share, rss_mb, late_s."""
    nothing = Outcome(float("nan"), None)
    c = cold_at(run, COLD_TARGETS["meters"])
    if c is None:
        return dict.fromkeys(("vs_floor", "cpu_share", "rss_mb", "late_s"), nothing)
    target = COLD_TARGETS["vs_floor"]
    rounds = [
        (a["seconds"] - b["seconds"]) / f["seconds"]
        for a, b, f in zip(c.runs("cold"), c.runs("empty"), c.runs("floor"), strict=False)
    ]
    out = {"vs_floor": Outcome(c.vs_floor, c.vs_floor <= target, target, rounds)}
    before = cold_at(baseline, COLD_TARGETS["meters"])
    if before is None:
        out["cpu_share"] = Outcome(c.cpu_ms_per_meter(), None)
    else:
        limit = COLD_TARGETS["cpu_share"] * before.cpu_ms_per_meter()
        out["cpu_share"] = Outcome(
            c.cpu_ms_per_meter(),
            c.cpu_ms_per_meter() <= limit,
            limit,
            original=before.cpu_ms_per_meter(),
        )
    rss = c.rss_mb()
    out["rss_mb"] = Outcome(rss, rss < COLD_TARGETS["rss_mb"], COLD_TARGETS["rss_mb"])
    late = c.late_s
    out["late_s"] = (
        Outcome(float("nan"), None, COLD_TARGETS["late_s"])
        if late is None
        else Outcome(late, abs(late) <= COLD_TARGETS["late_s"], COLD_TARGETS["late_s"])
    )
    return out

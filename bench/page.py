"""The page's words: the printed tables and docs/performance.md, around the numbers of one run.

Nothing here measures or derives a figure: every number comes from bench/report.py, and this
module only chooses what to say about it (which paragraphs apply, in what words).
"""

from __future__ import annotations

import re
import textwrap

from bench import capacity as groups_capacity
from bench.report import (
    COLD_TARGETS,
    POINTS_PER_METER,
    RUN_BUDGET_S,
    TARGETS,
    ConfigResult,
    Outcome,
    Run,
    capacity,
    capped_original,
    cold_at,
    cold_baseline,
    cold_baselines,
    cold_outcomes,
    cold_sizes,
    decoder_thrash,
    first_cycle,
    gateway_config,
    largest_without_delay,
    outcomes,
    probe,
    scale_checks,
    smallest,
    target_config,
    two_largest,
)

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


def _cpus(run: Run) -> int:
    return run.machine.get("cpus") or 1


def _cores(run: Run) -> str:
    """ "2 cores", "1 core": the machine's, as os.cpu_count() reported them."""
    count = _cpus(run)
    return f"{count} core" if count == 1 else f"{count} cores"


_DELAY_NOTES = {0.0: "the simulator as fast as it goes", 20.0: "a typical meter or RS-485 gateway"}


def _delays(run: Run) -> str:
    """The device delays measured, e.g. "0 ms (...) and 20 ms (...)"."""
    delays = sorted({c.delay_ms for c in run.configs})
    parts = [f"{d:g} ms ({_DELAY_NOTES[d]})" if d in _DELAY_NOTES else f"{d:g} ms" for d in delays]
    return " and ".join(parts) if len(parts) <= 2 else ", ".join(parts[:-1]) + " and " + parts[-1]


# -- tables -----------------------------------------------------------------------------------


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


def _shape(c: ConfigResult) -> str:
    """ "50 gateways x 10 meters" """
    return f"{c.gateway['gateways']} gateways x {c.gateway['meters_per_gateway']} meters"


def _connections(c: ConfigResult) -> str:
    count = c.gateway["max_connections"]
    return f"{count} connection{'' if count == 1 else 's'} each"


_GATEWAY_METHODS = {
    "ours": "ours (through links)",
    "original": "original's method (a connection per meter)",
    "bus": "bus floor, measured (bare loop)",
}


def gateway_table(run: Run) -> str:
    """One block of rows per gateway fleet: each method, and the bus floor computed from the
    plan."""
    rows = [
        "| fleet | method | cycle s | vs bus floor (s / computed floor s) | requests per meter "
        "| connections refused per cycle | values written per cycle | values lost per cycle "
        "| most requests in flight on one gateway |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in run.gateways:
        fleet = f"{_shape(c)}, {c.delay_ms:g} ms, {_connections(c)}"
        for method in c.cycles:
            if not c.ran(method):
                continue
            written = c.values_written(method)
            writes = method != "bus" and written == written  # the bus floor writes nothing
            runs = f" ({c.repeats(method)} runs)" if c.repeats(method) < c.repeats("ours") else ""
            sent, planned = c.requests_per_meter(method), c.planned_per_meter(method)
            per_meter = f"{sent:g}" if sent == planned else f"{sent:g} ({planned:g} planned)"
            rows.append(
                f"| {fleet} | {_GATEWAY_METHODS.get(method, method)} "
                f"| {_s(c.seconds(method))}{runs} | {_x(c.vs_bus_floor(method))} "
                f"| {per_meter} | {c.refused(method):g} "
                f"| {f'{written:.0f} of {c.values_expected}' if writes else '-'} "
                f"| {f'{c.values_lost(method):.0f}' if writes else '-'} "
                f"| {c.max_in_flight(method)} |"
            )
        busiest = c.gateway.get("busiest_bus_requests")
        rows.append(
            f"| {fleet} | bus floor, computed ({busiest} requests x {c.delay_ms:g} ms) "
            f"| {_s(c.bus_floor_s)} | 1.00x "
            f"| {c.requests_per_meter('bus'):g} | - | - | - | 1 |"
        )
    return "\n".join(rows)


def stages_table(run: Run) -> str:
    rows = [
        "| meters | delay | read + decode | validate | line protocol | spool append "
        "| InfluxDB write | total | CPU s | CPU ms per meter | in GC s "
        "| decoders compiled (s) | first cycle s | first cycle: decoders compiled (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in run.configs:
        cold = c.cold["ours"]
        rows.append(
            f"| {c.meters} | {c.delay_ms:g} ms | {_s(c.stage('read'))} | {_s(c.stage('validate'))} "
            f"| {_s(c.stage('lines'))} | {_s(c.stage('spool'))} | {_s(c.stage('write'))} "
            f"| {_s(c.seconds('ours'))} | {_s(c.cpu())} | {c.cpu_ms_per_meter():.2f} "
            f"| {_s(c.probe('gc_s'))} "
            f"| {c.probe('decoders_compiled'):.0f} ({_s(c.probe('decoder_compile_s'))}) "
            f"| {_s(cold['seconds'])} "
            f"| {probe(cold, 'decoders_compiled'):.0f} ({_s(probe(cold, 'decoder_compile_s'))}) |"
        )
    return "\n".join(rows)


def _mark(outcome: Outcome) -> str:
    if outcome.met is None:
        return "not measured"
    mark = "met" if outcome.met else "**missed**"
    return f"{mark} (marginal: rounds on both sides)" if outcome.marginal else mark


def _with_range(outcome: Outcome) -> str:
    if outcome.met is None:
        return "n/a"
    if len(outcome.per_round) < 2:
        return _x(outcome.value)
    low, high = min(outcome.per_round), max(outcome.per_round)
    return f"{_x(outcome.value)} (rounds {_x(low)} to {_x(high)})"


def verdicts_table(run: Run) -> str:
    results = outcomes(run)
    where = f"{TARGETS['target_meters']} meters, {TARGETS['target_delay_ms']:g} ms"
    requests, decode, rss = results["requests_per_meter"], results["decode"], results["rss_mb"]
    lines = [
        (
            f"requests per SDM630 cycle <= {TARGETS['requests_per_meter']} (original 27+)",
            f"ours {requests.value:g}, original {requests.original:g}"
            if requests.met is not None
            else "n/a",
            requests,
        ),
        (
            f"{where}: ours >= {TARGETS['vs_original']:g}x faster than the original's method",
            _with_range(results["vs_original"]),
            results["vs_original"],
        ),
        (
            f"{where}: ours within {TARGETS['vs_floor']:g}x of the transport floor",
            _with_range(results["vs_floor"]),
            results["vs_floor"],
        ),
        (
            f"decode >= {TARGETS['decode'] / 1e6:g} M registers/s on one core",
            f"{decode.value / 1e6:.2f} M registers/s (SDM630 responses, as the reader decodes "
            "them)",
            decode,
        ),
        (
            f"peak RSS at {TARGETS['target_meters']} meters < {TARGETS['rss_mb']:g} MB",
            f"{rss.value:.0f} MB" if rss.met is not None else "n/a",
            rss,
        ),
        *_gateway_verdicts(run, results),
    ]
    rows = ["| target | measured | |", "|---|---|---|"]
    rows += [f"| {target} | {measured} | {_mark(outcome)} |" for target, measured, outcome in lines]
    return "\n".join(rows)


def _gateway_where(run: Run) -> tuple[str, ConfigResult | None]:
    """The gateway targets' shape, and the fleet measured for them (another shape is named)."""
    target = (
        f"{TARGETS['gateways']} gateways x {TARGETS['meters_per_gateway']} meters, "
        f"{TARGETS['gateway_delay_ms']:g} ms"
    )
    c = gateway_config(run)
    if c is None:
        return target, None
    measured = f"{_shape(c)}, {c.delay_ms:g} ms"
    if measured != target:
        return f"{measured} (the target is set for {target})", c
    return target, c


def _gateway_verdicts(run: Run, results: dict[str, Outcome]) -> list[tuple[str, str, Outcome]]:
    where, c = _gateway_where(run)
    refused, ratio = results["gateway_refused"], results["vs_bus_floor"]
    connections = "" if c is None else f", {_connections(c)}"
    refused_text = (
        "n/a"
        if c is None
        else f"ours {refused.value:g} in {1 + c.repeats('ours')} cycles (warm-up included); "
        f"original's method {c.refused('original'):g} per cycle, "
        f"{c.values_lost('original'):.0f} of {c.values_expected} values lost"
        if c.ran("original")
        else f"ours {refused.value:g} in {1 + c.repeats('ours')} cycles (warm-up included)"
    )
    ratio_text = (
        "n/a"
        if c is None
        else f"{_with_range(ratio)}: {_s(c.seconds('ours'))} s against "
        f"{_s(c.bus_floor_s)} s ({c.gateway['busiest_bus_requests']} requests x "
        f"{c.delay_ms:g} ms); a bare loop took {_s(c.seconds('bus'))} s "
        f"({_x(c.vs_bus_floor('bus'))})"
    )
    return [
        (
            f"{where}{connections}: ours has {TARGETS['gateway_refused']} connections refused",
            refused_text,
            refused,
        ),
        (
            f"{where}: ours within {TARGETS['vs_bus_floor']:g}x of the bus floor",
            ratio_text,
            ratio,
        ),
    ]


# -- cold runs ----------------------------------------------------------------------------------


def _late(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


#: The columns a cold-run row has in both tables (`_cold_cells`).
_COLD_COLUMNS = (
    "cold run s | empty run s | cold - empty s | transport floor s | (cold - empty) / floor "
    "| CPU s | CPU ms per meter | CPU above the empty run's, ms per meter | peak RSS | event rows"
)


def _cold_cells(c) -> str:
    return (
        f"{_s(c.seconds('cold'))} | {_s(c.seconds('empty'))} | {_s(c.excess_s)} "
        f"| {_s(c.seconds('floor'))} | {_x(c.vs_floor)} | {_s(c.cpu())} "
        f"| {c.cpu_ms_per_meter():.2f} | {c.cpu_above_empty_ms_per_meter():.2f} "
        f"| {c.rss_mb():.0f} MB | {c.events():.0f}"
    )


def cold_table(run: Run) -> str:
    rows = [
        f"| meters | delay | {_COLD_COLUMNS} | first sample late | scheduled: second -> success |",
        "|---:|---:|" + "---:|" * 12,
    ]
    rows += [
        f"| {c.meters} | {c.delay_ms:g} ms | {_cold_cells(c)} | {_late(c.late_s)} "
        f"| {_late(c.scheduled_done_s)} |"
        for c in cold_sizes(run)
    ]
    return "\n".join(rows)


def cold_stages_table(run: Run) -> str:
    """Per size, where a cold run's time goes, with the empty run's stages beside it."""
    names: list[str] = []
    for c in cold_sizes(run):
        names += [n for n in c.stage_names() if n not in names]
    names = [n for n in names if n != "rest"] + ["rest"]
    rows = [
        "| meters | run | " + " | ".join(names) + " | total | CPU s | peak RSS | event rows |",
        "|---:|---|" + "---:|" * (len(names) + 4),
    ]
    for c in cold_sizes(run):
        for kind, label in (("cold", "poll (cold)"), ("empty", "empty job")):
            present = set(c.stage_names(kind))
            cells = [_s(c.stage(n, kind)) if n in present else "-" for n in names]
            median_run = c.median_run(kind) or {}
            rows.append(
                f"| {c.meters} | {label} | " + " | ".join(cells) + f" | "
                f"{_s(median_run.get('seconds', float('nan')))} "
                f"| {_s(median_run.get('cpu_s') or float('nan'))} "
                f"| {(median_run.get('vmhwm_kb') or 0) / 1024:.0f} MB "
                f"| {median_run.get('events', 0)} |"
            )
    return "\n".join(rows)


def cold_verdicts_table(run: Run) -> str:
    baseline = cold_baseline()
    results = cold_outcomes(run, baseline)
    where = f"{COLD_TARGETS['meters']} meters, {TARGETS['target_delay_ms']:g} ms"
    c = cold_at(run, COLD_TARGETS["meters"])
    ratio, cpu, rss, late = (results[k] for k in ("vs_floor", "cpu_share", "rss_mb", "late_s"))
    compiled = cold_at(cold_baselines().get("before, bytecode compiled"), c.meters if c else 0)
    compiled_text = (
        ""
        if compiled is None
        else f" ({compiled.cpu_ms_per_meter():.2f} ms with bytecode compiled)"
    )
    if c is None:
        texts = ["n/a"] * 4
    else:
        texts = [
            f"{_with_range(ratio)}: {_s(c.excess_s)} s ({_s(c.seconds('cold'))} - "
            f"{_s(c.seconds('empty'))}) against a floor of {_s(c.seconds('floor'))} s",
            f"{cpu.value:.2f} ms per meter; before {cpu.original:.2f} ms{compiled_text}, "
            f"target <= {cpu.target:.2f} ms"
            if cpu.met is not None
            else f"{cpu.value:.2f} ms per meter (no baseline: bench/cold_baseline.json)",
            f"{rss.value:.0f} MB",
            "the read op reports no lateness (metadata key `first sample late (s)`)"
            if late.met is None
            else f"{late.value:.3f} s (a run launched as the schedule does, due "
            f"{c.scheduled_lead_s:.1f} s after its launch)",
        ]
    lines = [
        f"{where}: a cold poll run's time above the empty run's within "
        f"{COLD_TARGETS['vs_floor']:g}x the transport floor",
        f"{where}: the cold run's CPU per meter at most "
        f"{COLD_TARGETS['cpu_share']:g} of the baseline's",
        f"{where}: the run process's peak RSS < {COLD_TARGETS['rss_mb']:g} MB",
        f"{where}: a scheduled run's first sample within {COLD_TARGETS['late_s']:g} s of its "
        "second",
    ]
    rows = ["| target | measured | |", "|---|---|---|"]
    rows += [
        f"| {target} | {text} | {_mark(outcome)} |"
        for target, text, outcome in zip(lines, texts, (ratio, cpu, rss, late), strict=True)
    ]
    return "\n".join(rows)


def cold_before_after(run: Run) -> str:
    """The baselines' cold runs (before issue 17's work) beside this run's, per size."""
    baselines = cold_baselines()
    if not baselines:
        return "No baseline saved (bench/cold_baseline.json)."
    rows = [f"| meters | | {_COLD_COLUMNS} |", "|---:|---|" + "---:|" * 10]
    for c in cold_sizes(run):
        measured = [(label, cold_at(b, c.meters)) for label, b in baselines.items()]
        rows += [
            f"| {c.meters} | {label} | {_cold_cells(x)} |"
            for label, x in [*measured, ("now", c)]
            if x is not None
        ]
    return "\n".join(rows)


def _baseline_text(run: Run) -> str:
    baselines = cold_baselines()
    if not baselines:
        return ""
    now = run.cold_product
    changes = " with uncommitted changes" if now.get("changes") else ""
    now_text = f" (the product code of commit `{now.get('commit', '?')[:12]}`{changes})"
    parts = []
    for label, baseline in baselines.items():
        product = baseline.cold_product
        bytecode = (
            "with the environment's bytecode compiled"
            if product.get("bytecode", True)
            else "ignoring the installed .pyc files but the standard library's, so that each "
            "process compiled every other module it imported, as every run did before "
            "`make sync` compiled bytecode "
            "(`--cold-no-bytecode`)"
        )
        parts.append(
            f"- **{label}**: the product code of commit `{product.get('commit', '?')[:12]}` "
            f"({product.get('commit_date', '?')}), {bytecode}; measured on "
            f"{baseline.machine.get('date', '?')} by `{baseline.command}`."
        )
    return (
        "The same cold runs before issue 17's work on the cold path (bench/README.md says how "
        f"they were made); **now** is this run{now_text}. They were measured at different "
        "times on a shared machine: compare the ratios and CPU per meter first. The CPU target "
        "is half of **before**.\n\n" + "\n".join(parts)
    )


def _lead(run: Run) -> str:
    leads = [c.scheduled_lead_s for c in cold_sizes(run) if c.scheduled_lead_s is not None]
    if not leads:
        return "a few seconds"
    low, high = f"{min(leads):.0f}", f"{max(leads):.0f}"
    return f"{low} s" if low == high else f"{low}-{high} s"


def cold_section(run: Run) -> str:
    if not run.cold:
        return "## Cold runs\n\nNot measured in this run (`--no-cold`).\n"
    first = cold_sizes(run)[0]
    repeats = len(first.runs("cold"))
    return f"""\
## Cold runs

Every production poll is a new Dagster run in a new process. These rows launch
`poll_meters_job` as the daemon does: a Dagster instance in a temp folder (SQLite storage,
the DefaultRunLauncher, runs launched at once), the code location `energymon_pipeline.definitions`
in its code server, the run created by GraphQL's `launchRun` and started in its own process,
reading the same simulated SDM630 fleet (meters from a SQLite registry built by the registry
layer) and writing to the same influxd. Beside each, on the same instance: an **empty job**
(one op that does nothing, in the bench's own code location: Dagster's own cost of a run)
and the **transport floor** (a bare loop's cycle on the same fleet). Seconds are from the launch
to RUN_SUCCESS in the run's event log, medians of {repeats} runs per size after one warm-up
run of each that is not counted; CPU and peak RSS are the run process's own (utime + stime and
VmHWM from /proc, sampled every 20 ms until it exits).

{cold_table(run)}

**first sample late**: one more poll run per size, launched with the run config a schedule
tick gives it (its minute and the second to sample at), due {_lead(run)} after the launch (the
schedule ticks a minute ahead; a cold start takes a few seconds), waits for its second and reports
how late its first request was (the read op's `first sample late (s)`; `-` where the product
reports none). **scheduled: second -> success**: that run's time from its second to RUN_SUCCESS,
what a user of a scheduled poll waits for: its readings are in InfluxDB by then. It imports what
it needs after its read while it waits (ops/run_process.py), so it is shorter than a cold run
minus Dagster's start; `-` where not measured.

Where a cold run's time goes, from its event log (the stages of the run with the median time,
so they add up to its total): **launch -> process** (the launch, the code
server starting the run's process, Python and Dagster imported), **imports + definitions**
(from "Started process for run" to RUN_START: the code location imported and its definitions
loaded), each op from STEP_START to STEP_SUCCESS, and **rest** (between and after the ops:
event writes, output handling, the run's end).

{cold_stages_table(run)}

{cold_verdicts_table(run)}

### Before and after

{_baseline_text(run)}

{cold_before_after(run)}
"""


# -- what limits ours -------------------------------------------------------------------------


def _vs_floor(run: Run, big: ConfigResult) -> str:
    return (
        f"- **Ours vs the floor** ({big.meters} meters, {big.delay_ms:g} ms: "
        f"{_x(big.vs_floor)}). Of ours' {_s(big.seconds('ours'))} s, reading and decoding "
        f"take {_s(big.stage('read'))} s against the floor's {_s(big.seconds('floor'))} s for "
        f"the same {big.requests('floor')} requests; the remaining {_s(big.after_read_s)} s are "
        f"validation ({_s(big.stage('validate'))} s), line protocol "
        f"({_s(big.stage('lines'))} s), the spool append ({_s(big.stage('spool'))} s) and the "
        f"InfluxDB write ({_s(big.stage('write'))} s), which the floor does not do at all and "
        f"which run after the last response. What ours adds is decoding each answer into an "
        f"array, the DataFrame built from those arrays, one line of text per point, and one "
        f"HTTP write (influxd's time to take it, mostly), on the one core a poll run's event "
        f"loop uses. "
        f"The simulator shares the {_cores(run)}: its processes used "
        f"{_s(big.fleet_cpu('floor'))} s of CPU during a floor cycle and "
        f"{_s(big.fleet_cpu('ours'))} s during one of ours, so during the read the client "
        f"competes with them for CPU, as it would not with remote meters."
    )


def _small_fleets(small: ConfigResult) -> str:
    return (
        f"- **Small fleets** show a larger ratio to the floor ({small.meters} meters, "
        f"{small.delay_ms:g} ms: {_x(small.vs_floor)}) because a cycle has fixed costs "
        f"that do not grow with the fleet: validation, the spool's fsyncs and one HTTP "
        f"write, {_s(small.after_read_s)} s together here, against a floor of a few round trips."
    )


def _decoder_thrash(c: ConfigResult) -> str:
    return (
        f"- **Decoders recompiled every cycle** at {c.meters} meters: each warm cycle "
        f"compiled {c.probe('decoders_compiled'):.0f} request decoders "
        f"({_s(c.probe('decoder_compile_s'))} s). `decode.block_decoder` keeps one decoder per "
        f"distinct request, in a bounded LRU cache, so that every meter of a type shares its "
        f"type's decoders: a warm cycle that compiles any means the fleet plans more distinct "
        f"requests than the cache holds."
    )


def _first_cycle(run: Run, c: ConfigResult) -> str:
    first = c.cold["ours"]
    return (
        f"- **The first cycle of a process** ({c.meters} meters, {c.delay_ms:g} ms) took "
        f"{_s(first['seconds'])} s against {_s(c.seconds('ours'))} s warm: validation "
        f"{_s(first['stages'].get('validate', 0))} s against "
        f"{_s(c.stage('validate'))} s, "
        f"{probe(first, 'decoders_compiled'):.0f} decoders compiled "
        f"({_s(probe(first, 'decoder_compile_s'))} s), and the first write creates the "
        f"database. Dagster starts a new process for every run, so every real poll run "
        f"is a first cycle, after importing the code location "
        f"({_s(run.baseline.get('import_seconds', float('nan')))} s, measured below)"
        + ("; the cold runs above measure such runs whole." if run.cold else ".")
    )


def _garbage_collection(lighter: ConfigResult, heavy: ConfigResult) -> str:
    return (
        f"- **Garbage collection** took {_s(heavy.probe('gc_s'))} s of ours' "
        f"{_s(heavy.seconds('ours'))} s at {heavy.meters} meters: values stay in numpy arrays "
        f"from the decoder to the frame, but each point's line of text and each answer's "
        f"objects live until the write, so the collector's full passes get both more frequent "
        f"and longer as the fleet grows: CPU per meter went from "
        f"{lighter.cpu_ms_per_meter():.2f} ms at {lighter.meters} meters to "
        f"{heavy.cpu_ms_per_meter():.2f} ms at {heavy.meters} ({heavy.delay_ms:g} ms)."
    )


def _without_delay(run: Run, c: ConfigResult) -> list[str]:
    parts = [
        f"- **Without device delay** ({c.meters} meters, 0 ms: ours {_s(c.seconds('ours'))} "
        f"s, floor {_s(c.seconds('floor'))} s, {_x(c.vs_floor)}) every method is CPU-bound, "
        f"and the client, the simulator processes and influxd share the box's "
        f"{_cores(run)}, so the ratios there mix our cost with the simulator's. Ours spends "
        f"{c.cpu_ms_per_meter():.2f} ms of CPU per meter (all stages), the floor "
        f"{c.cpu_ms_per_meter('floor'):.2f} ms."
    ]
    if c.ran("original"):
        parts.append(
            f"- **The original's method at 0 ms** is closer than at 20 ms "
            f"({_x(c.vs_original)} at {c.meters} meters): with no device delay a round "
            f"trip on loopback costs a fraction of a millisecond, so 27 requests per meter "
            f"cost little more than 2. Real meters and RS-485 gateways answer in tens of "
            f"milliseconds, which is what the 20 ms rows show."
        )
    return parts


def _behind_gateways(run: Run, c: ConfigResult) -> str:
    busiest = c.gateway["busiest_bus_requests"]
    text = (
        f"- **Behind gateways** ({_shape(c)}, {c.delay_ms:g} ms: ours "
        f"{_x(c.vs_bus_floor('ours'))} of the bus floor). A gateway's bus serves one request "
        f"at a time, so the busiest gateway's {busiest} planned requests take at least "
        f"{_s(c.bus_floor_s)} s at {c.delay_ms:g} ms each, however many gateways are read at "
        f"once. The bare loop doing exactly that took {_s(c.seconds('bus'))} s: "
        f"{c.bus_overhead_ms(c.seconds('bus')):.1f} ms per request beyond the delay (the round "
        f"trip on loopback, pymodbus and the simulator, which share the {_cores(run)}). Ours "
        f"read for {_s(c.stage('read'))} s, {c.bus_overhead_ms(c.stage('read')):.1f} ms per "
        f"request beyond the delay, and spent {_s(c.after_read_s)} s after the last answer "
        f"(validation {_s(c.stage('validate'))} s, line protocol {_s(c.stage('lines'))} s, "
        f"spool {_s(c.stage('spool'))} s, InfluxDB write {_s(c.stage('write'))} s), "
        f"{_s(c.seconds('ours'))} s in all. On a bus, what the client does between an answer "
        f"and the next request is in series with the bus: ours used {_s(c.cpu())} s of CPU "
        f"per cycle ({c.cpu_ms_per_request():.2f} ms per request, all stages) against the "
        f"bare loop's {_s(c.cpu('bus'))} s ({c.cpu_ms_per_request('bus'):.2f} ms), on one "
        f"event loop thread that serves all {c.gateway['gateways']} gateways. Gateways "
        f"started together and answering after the same delay answer in bursts, and each "
        f"answer of a burst waits for the others' handling before its gateway's next request "
        f"goes out: that is what the extra time per request is consistent with, and such a "
        f"wait grows with the number of gateways one run reads (one shape measured here)."
    )
    if c.ran("original"):
        text += (
            f" The original's method opens a connection per meter, 10 meters at a time in "
            f"meter order, so the meters in flight sit mostly behind the same gateway: its "
            f"gateways refused {c.refused('original'):g} connections per cycle and "
            f"{c.values_lost('original'):.0f} of {c.values_expected} values were lost."
        )
    return text


def analysis(run: Run) -> str:
    """What limits ours now: one paragraph for each finding this run's numbers support."""
    parts = []
    if (gw := gateway_config(run)) is not None and gw.ran("bus"):
        parts.append(_behind_gateways(run, gw))
    if (big := target_config(run)) is not None:
        parts.append(_vs_floor(run, big))
    if (small := smallest(run)) is not None:
        parts.append(_small_fleets(small))
    if (thrash := decoder_thrash(run)) is not None:
        parts.append(_decoder_thrash(thrash))
    if (cold := first_cycle(run)) is not None:
        parts.append(_first_cycle(run, cold))
    if (pair := two_largest(run)) is not None:
        parts.append(_garbage_collection(*pair))
    if (zero := largest_without_delay(run)) is not None:
        parts.extend(_without_delay(run, zero))
    return "\n".join(parts)


# -- scale ------------------------------------------------------------------------------------


def _other_cores(run: Run) -> str:
    """What the cores a poll run leaves are for, on this machine."""
    spare = _cpus(run) - 1
    services = "influxd, the Dagster daemon, webserver and code server"
    if spare == 0:
        return f"on this box it shares that core with {services}"
    return f"the other {'core is' if spare == 1 else f'{spare} cores are'} left to {services}"


def _launcher_room(run: Run) -> str:
    if _cpus(run) <= 2:
        return f"this box: {_cores(run)}, so a second group's run competes with the services"
    return (
        f"this box: {_cores(run)}, so up to {_cpus(run) - 1} groups' runs at once leave a core "
        "to the services"
    )


def scale_section(run: Run) -> str:
    cap = capacity(run)
    if cap is None:
        return (
            "Not enough configurations in this run for the per-meter cost (it needs two meter "
            "counts at one delay)."
        )
    large, smaller = cap.large, cap.small
    influx = run.influx
    thrash_note = (
        f" That figure includes {_s(large.probe('decoder_compile_s'))} s per cycle of decoder "
        "recompilation (see above), which a larger decoder cache removes."
        if large.probe("decoders_compiled") > 0
        else ""
    )
    cpu_ms = cap.cpu_per_meter_s * 1000
    per_line = cap.meters_per_second_per_line
    return f"""\
### One poll run on this box

Measured at {large.meters:,} meters and {large.delay_ms:g} ms: a cycle of ours took
{_s(large.seconds("ours"))} s of wall time and {_s(large.cpu())} s of CPU, **{cpu_ms:.2f} ms of
CPU per meter** for the whole path (the floor alone took {_s(large.seconds("floor"))} s: at
that size the client and the simulator processes compete for the {_cores(run)}, so the wall time
overstates what remote meters would cost; CPU time is the figure that carries over).{thrash_note}
A poll run is one process with one event loop thread, so it uses at most one core;
{_other_cores(run)}. Device latency costs
{cap.requests_per_meter} requests x {large.delay_ms:g} ms
/ {run.concurrency} (the read concurrency, `ENERGYMON_READ_CONCURRENCY`) =
{cap.latency_per_meter_s * 1000:.2f} ms of wall time per meter, overlapped with the CPU work as
long as the concurrency covers it: slow gateways call for a higher concurrency before they call
for another run.

Every poll run is a fresh process: importing the code location took
{_s(run.baseline.get("import_seconds", float("nan")))} s here, and the first (cold) cycle's
extra cost another {_s(cap.cold_extra_s)} s. A run must end
before its group's next tick (the schedule skips a tick while the previous run of the group is
still going) and should leave room for meters that do not answer (each holds a concurrency slot
for timeout x (1 + retries), 6 s by default). Sizing a run to half the minute
({RUN_BUDGET_S:g} s) of one core:

- **one poll run serves about {cap.meters_per_run:,} SDM630 meters per minute** on this box
  (about {cap.meters_hard_limit:,} before it overruns the minute outright). This extrapolates
  the CPU per meter measured at {large.meters:,} meters; that cost grew from
  {smaller.cpu_ms_per_meter():.2f} ms at {smaller.meters} meters (garbage
  collection and per-value objects grow with the fleet), so treat it as an upper bound and
  measure a planned size with `uv run python -m bench --scale-check N` before relying on it.
- Peak memory of such a run: about {cap.rss_at_capacity_mb:.0f} MB (the code location's
  {run.baseline.get("vmhwm_kb", 0) / 1024:.0f} MB, plus {cap.rss_per_meter_kb:.0f} kB per
  meter, measured between the two largest fleets).

Real RS-485 gateways answer one request at a time per serial line: meters behind one gateway
are read one after another whatever the concurrency, so there the gateway, not the poller, sets
the pace (at {large.delay_ms:g} ms and {cap.requests_per_meter} requests per meter: at most
{"n/a" if per_line is None else f"{per_line:.0f}"} meters per second per line).

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
meters would be about {cap.groups_for(100_000)} groups, each needing about one core and the
memory above for a few seconds to half a minute every minute.

Where the runs execute is Dagster's run launcher, set in `dagster.yaml` without any change to
energymon: the default launcher runs them as processes of the code server ({_launcher_room(run)});
`DockerRunLauncher` (dagster-docker) starts
each run in its own container and `K8sRunLauncher` (dagster-k8s) as its own Kubernetes Job, on
whichever machine has room (docs/deployment.md, "Scaling out"). Groups should follow the network
(a site, a gateway subnet), so a run sits close to its meters and an outage stays in one group.

### The next limit: InfluxDB

Every meter adds {POINTS_PER_METER} points per poll ({POINTS_PER_METER - 1} readings and its
`energymon_poll` health point). The influxd on this box took
{_big(influx["writer_points_per_s"])} points/s from `InfluxWriter` ({influx["writer_batch"]:,}-point
batches) and {_big(influx["spool_points_per_s"])} points/s through the spool (fsync'd append,
then flush; {influx["spool_batch"]:,}-point batches, one 500-meter poll each), while sharing
the {_cores(run)} with the writer: about **{cap.influx_meters_per_minute:,} meters per minute** for
one InfluxDB 1.x, whatever the number of poll runs feeding it. Past that, InfluxDB is the limit:
give it a machine of its own (`INFLUXDB_HOSTNAME`), then split groups over several InfluxDB
instances or databases (InfluxDB 1.x open source does not cluster). The spool keeps readings
while InfluxDB falls behind: a slow write delays data, it does not lose it."""


# -- the page ---------------------------------------------------------------------------------

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


def _failures(run: Run) -> str:
    notes = [note for c in run.configs for note in c.failures]
    notes += [f"cold runs, {note}" for c in cold_sizes(run) for note in c.failures]
    # Behind gateways the original's method is expected to fail (its losses are in the table).
    notes += [
        f"{_shape(c)}: {note}"
        for c in run.gateways
        for note in c.failures
        if not note.startswith("original:")
    ]
    if not notes:
        return ""
    return "\n**Failures during the run (these rows are not valid measurements):**\n" + "".join(
        f"- {n}\n" for n in notes
    )


def _gateway_section(run: Run) -> str:
    if not run.gateways:
        return (
            "### Behind gateways\n\nNot measured in this run (`--gateways 0`): no gateway fleet.\n"
        )
    c = run.gateways[0]
    return f"""\
### Behind gateways

The same SDM630s behind simulated Modbus TCP to RS-485 gateways ({_shape(c)}: unit ids
1-{c.gateway["meters_per_gateway"]} behind each gateway's port), each serving one request at a
time on its bus, {c.delay_ms:g} ms per request, and accepting {_connections(c)}: it closes
any further connection as soon as it is accepted, as cheap gateways do. Ours reads with the
registry's defaults, so each gateway is one link with one connection. The gateways' own counts
(connections refused, requests in flight) are taken around every cycle. Cycle seconds are
medians of {c.repeats("ours")} cycles after a warm-up, like the rows above.

{gateway_table(run)}

- **bus floor, computed**: the busiest gateway's planned requests back to back at the device
  delay, every gateway at once, with no round trip and no processing: no client can be faster.
  The **vs bus floor** column divides by it.
- **bus floor, measured**: a bare pymodbus loop doing exactly that: one connection per
  gateway, its meters' planned requests one after another, gateways in parallel, nothing
  decoded or written.
- **original's method**: as above, one connection per meter, 10 meters at a time; a refused
  connection costs that meter its cycle.
- **values lost**: of every meter's {c.gateway["values_per_meter"]} values, those not written
  in the cycle.
"""


def _decode_text(decode: dict) -> str:
    mixed = decode.get("mixed_request_registers_per_s")
    mixed_text = (
        ""
        if mixed is None
        else f" {mixed / 1e6:.1f} M registers/s on a {decode['mixed_request_registers']}-register "
        "request mixing all 32 layouts (every data type, word and byte order);"
    )
    return f"""\
- **Decode**, one core (the process pinned to CPU {decode["cpu"]}):
  {decode["sdm630_registers_per_s"] / 1e6:.2f} M registers/s
  ({decode["sdm630_values_per_s"] / 1e6:.2f} M values/s) on the SDM630 plan's responses
  ({" and ".join(str(w) for w in decode["sdm630_request_words"])} registers) decoded as the
  reader does it (`np.asarray(words, uint16)` then `decode_block`);
  {decode["full_request_registers_per_s"] / 1e6:.1f} M registers/s on a full 124-register
  FLOAT32 request;{mixed_text} {decode["bulk_registers_per_s"] / 1e6:.0f} M registers/s in bulk
  (`decode_values`, 1 M registers). Per response, the fixed cost of a call (the list from
  pymodbus to an array, the decoder lookup) dominates: larger requests decode faster per
  register."""


def _page(run: Run) -> str:
    machine = run.machine
    packages = ", ".join(f"{name} {ver}" for name, ver in machine["packages"].items())
    influx = run.influx
    baseline = run.baseline
    skipped = scale_checks(run)
    skipped_text = (
        "Rows marked *not run* are scale checks (`--scale-check`): ours and the floor only, "
        f"{max(c.repeats('ours') for c in skipped)} cycles, since the original's method would "
        "take minutes per cycle there.\n"
        if skipped
        else ""
    )
    fewer = capped_original(run)
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
{run.fleet_processes} separate processes ({run.units_per_port} meters per port, served
concurrently like meters with an address each: the bench gives these meters
`max_connections` {run.units_per_port}, so ours opens one TCP connection per meter per cycle,
as the other methods do); device response delay {_delays(run)}.
Cycle seconds are
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
{_failures(run)}
{_gateway_section(run)}
## Targets

{verdicts_table(run)}

{cold_section(run)}
{groups_capacity.page_section(run)}
## Where ours spends its time

Medians per stage of ours' cycles; the first cycle of each process is shown apart.

{stages_table(run)}

{analysis(run)}

## Decode and InfluxDB write throughput

{_decode_text(run.decode)}
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
  `read_meters` (planning, reading, decoding), `readings.validate` (the frame from the decoded
  arrays; finite and min/max checks), `reading_lines`
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

"""Capacity math for poll groups, from the benchmark's cold runs (bench/cold.py): how many
meters one group's run serves per tick, what a run costs (time, CPU, memory) and what N groups
cost the Dagster instance (run and event-log rows, with the purge job's retention).

Every figure comes from one run's cold-run rows (`inputs`), taken at the precision the page
prints them, and the section shows those inputs in a table of its own: `section(inputs)` is a
function of that table alone, so tests/test_capacity_doc.py can read the table back from
docs/performance.md, compute the section again and compare (and check the inputs against the
page's cold-run table). Settings (the run retention) come from energymon's own defaults.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from bench.report import MINUTE_S, RUN_BUDGET_S, Run, cold_sizes

#: Cadences (seconds between ticks) and device delays (ms) the meters-per-group table shows.
CADENCES_S = (60, 300, 900)
DELAYS_MS = (20, 50, 100)
#: Numbers of poll groups the instance-cost table shows.
GROUP_COUNTS = (1, 4, 16, 64)
#: Fleet sizes the groups table shows.
FLEETS = (10_000, 100_000)
DAY_S = 86_400
MONTH_DAYS = 30
HEADING = "## Capacity: poll groups and what they cost"
INPUT_COLUMNS = ("meters", "delay ms", "cold run s", "empty run s", "CPU s", "peak RSS MB",
                 "event rows", "event bytes", "requests per meter")  # fmt: skip


@dataclass(frozen=True)
class Size:
    """One fleet size's cold-run figures, as the page prints them (medians; peak RSS the
    highest; event bytes per run when the run measured them)."""

    meters: int
    delay_ms: float
    cold_s: float
    empty_s: float
    cpu_s: float
    rss_mb: float
    events: int
    event_bytes: int | None
    requests_per_meter: float


@dataclass(frozen=True)
class Inputs:
    sizes: tuple[Size, ...]
    concurrency: int
    retention_days: int


def _retention_days() -> int:
    from energymon_pipeline import settings

    return settings.pipeline({}).run_retention_days


def inputs(run: Run) -> Inputs | None:
    """The figures the capacity math needs, from `run`'s cold runs (None without two sizes)."""
    sizes = []
    for c in sorted(cold_sizes(run), key=lambda c: c.meters):
        byte_counts = [r["event_bytes"] for r in c.runs("cold") if r.get("event_bytes")]
        floor = c.runs("floor")
        sizes.append(
            Size(
                meters=c.meters,
                delay_ms=c.delay_ms,
                cold_s=round(c.seconds("cold"), 3),
                empty_s=round(c.seconds("empty"), 3),
                cpu_s=round(c.cpu(), 3),
                rss_mb=round(c.rss_mb()),
                events=round(c.events()),
                event_bytes=round(sorted(byte_counts)[len(byte_counts) // 2])
                if byte_counts
                else None,
                requests_per_meter=round(floor[0]["requests"] / c.meters, 2) if floor else 0.0,
            )
        )
    if len(sizes) < 2:
        return None
    return Inputs(tuple(sizes), run.concurrency, _retention_days())


@dataclass(frozen=True)
class Model:
    """Straight lines through the smallest and the largest size: a fixed part per run and a
    part per meter, for wall time, CPU and peak memory."""

    small: Size
    large: Size
    wall_per_meter_s: float
    wall_fixed_s: float
    cpu_per_meter_s: float
    cpu_fixed_s: float
    rss_per_meter_mb: float
    rss_fixed_mb: float

    def wall_per_meter_at(self, delay_ms: float, concurrency: int) -> float:
        """Per-meter wall time at another device delay: each meter's requests wait the delay
        difference, `concurrency` meters at a time; never below the CPU per meter."""
        extra = self.large.requests_per_meter * (delay_ms - self.large.delay_ms) / 1000
        return max(self.cpu_per_meter_s, self.wall_per_meter_s + extra / concurrency)

    def meters_per_group(self, cadence_s: float, delay_ms: float, concurrency: int) -> int:
        """Meters one run reads within half its cadence (room for dead meters: each holds a
        read slot for its timeout x (1 + retries)), after the run's fixed part."""
        budget = cadence_s * RUN_BUDGET_S / MINUTE_S - self.wall_fixed_s
        return max(0, int(budget / self.wall_per_meter_at(delay_ms, concurrency)))

    def per_link(self, cadence_s: float, delay_ms: float) -> int:
        """Meters one RS-485 line (one request at a time) serves in half the cadence."""
        per_meter = self.large.requests_per_meter * delay_ms / 1000
        return int(cadence_s * RUN_BUDGET_S / MINUTE_S / per_meter) if per_meter else 0


def model(data: Inputs) -> Model:
    small, large = data.sizes[0], data.sizes[-1]
    span = large.meters - small.meters

    def line(a: float, b: float) -> tuple[float, float]:
        slope = max(0.0, (b - a) / span)
        return slope, max(0.0, a - slope * small.meters)

    wall = line(small.cold_s, large.cold_s)
    cpu = line(small.cpu_s, large.cpu_s)
    rss = line(small.rss_mb, large.rss_mb)
    return Model(small, large, *wall, *cpu, *rss)


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _inputs_table(data: Inputs) -> str:
    rows = ["| " + " | ".join(INPUT_COLUMNS) + " |", "|" + "---:|" * len(INPUT_COLUMNS)]
    for s in data.sizes:
        event_bytes = "-" if s.event_bytes is None else s.event_bytes
        cells = (s.meters, f"{s.delay_ms:g}", f"{s.cold_s:.3f}", f"{s.empty_s:.3f}",
                 f"{s.cpu_s:.3f}", f"{s.rss_mb:.0f}", s.events, event_bytes,
                 f"{s.requests_per_meter:g}")  # fmt: skip
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(rows)


def inputs_from_section(text: str) -> Inputs:
    """The inputs table of a rendered section, read back (with the settings it names)."""
    header = "| " + " | ".join(INPUT_COLUMNS) + " |"
    lines = text.splitlines()
    start = lines.index(header) + 2
    sizes = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        sizes.append(
            Size(
                int(cells[0]),
                float(cells[1]),
                float(cells[2]),
                float(cells[3]),
                float(cells[4]),
                float(cells[5]),
                int(cells[6]),
                None if cells[7] == "-" else int(cells[7]),
                float(cells[8]),
            )  # fmt: skip
        )
    concurrency = int(re.search(r"read\s+concurrency\s+(\d+)", text).group(1))
    retention = int(re.search(r"DAGSTER_RUN_RETENTION_DAYS=(\d+)", text).group(1))
    return Inputs(tuple(sizes), concurrency, retention)


def _groups_table(data: Inputs, m: Model) -> str:
    rows = ["| cadence | device delay | meters per group | per RS-485 line | "
            + " | ".join(f"groups for {_n(f)} meters" for f in FLEETS) + " |",
            "|---:|---:|---:|---:|" + "---:|" * len(FLEETS)]  # fmt: skip
    for cadence in CADENCES_S:
        for delay in DELAYS_MS:
            per_group = m.meters_per_group(cadence, delay, data.concurrency)
            groups = [str(math.ceil(f / per_group)) if per_group else "-" for f in FLEETS]
            rows.append(
                f"| {cadence:g} s | {delay:g} ms | {_n(per_group)} "
                f"| {_n(m.per_link(cadence, delay))} | {' | '.join(groups)} |"
            )
    return "\n".join(rows)


def _instance_table(data: Inputs, m: Model) -> str:
    events = m.large.events
    size = m.large.event_bytes
    rows = ["| poll groups | poll runs per day (a tick a minute) | event rows per day | rows kept "
            f"({data.retention_days} days) | event log after a month |",
            "|---:|---:|---:|---:|---:|"]  # fmt: skip
    for groups in GROUP_COUNTS:
        runs = groups * DAY_S // 60
        per_day = runs * events
        kept = per_day * data.retention_days
        month = (
            "not measured"
            if size is None
            else f"{size * runs * min(MONTH_DAYS, data.retention_days) / 1e9:,.2f} GB"
        )
        rows.append(f"| {groups} | {_n(runs)} | {_n(per_day)} | {_n(kept)} | {month} |")
    return "\n".join(rows)


def section(data: Inputs) -> str:
    m = model(data)
    small, large = m.small, m.large
    per_group = m.meters_per_group(60, large.delay_ms, data.concurrency)
    cpu_at = m.cpu_fixed_s + m.cpu_per_meter_s * per_group
    rss_at = m.rss_fixed_mb + m.rss_per_meter_mb * per_group
    size_text = (
        "The run doesn't measure how many bytes an event row takes, so the database size is "
        "not measured: multiply the rows kept by the `event_logs` table's bytes per row on "
        "your own instance."
        if large.event_bytes is None
        else f"A poll run's event rows took {large.event_bytes:,} bytes (their serialized "
        "events, what the `event_logs` table stores, without indexes)."
    )
    return f"""\
{HEADING}

Computed by `bench/capacity.py` from this run's cold runs (the inputs below, as the table above
prints them) and energymon's defaults (DAGSTER_RUN_RETENTION_DAYS={data.retention_days}, read
concurrency {data.concurrency}); docs/deployment.md, "Scaling out", says how to use it.

{_inputs_table(data)}

**What one run costs.** Through the smallest and the largest fleet ({small.meters} and
{large.meters} meters at {large.delay_ms:g} ms): a poll run takes
{m.wall_fixed_s:.3f} s + {m.wall_per_meter_s * 1000:.3f} ms per meter from launch to success
(Dagster's own floor, the empty run, is {large.empty_s:.3f} s of it), uses
{m.cpu_fixed_s:.3f} s + {m.cpu_per_meter_s * 1000:.3f} ms of CPU per meter on one core, and
peaks at {m.rss_fixed_mb:.0f} MB + {m.rss_per_meter_mb * 1024:.0f} kB per meter. The fixed
part is the **run overhead per group per tick**: every group pays it every tick, so fewer,
larger groups cost less, as long as each run ends in time.

**Meters per group.** A run should read its meters within half its cadence (the rest is room
for meters that do not answer: each holds a read slot for its timeout x (1 + retries)), after
its fixed part; a longer device delay adds
{large.requests_per_meter:g} requests x the extra delay / {data.concurrency} per meter. Meters
behind one RS-485 gateway are read one request at a time, so one line serves at most the
**per RS-485 line** column, whatever the group's size.

{_groups_table(data, m)}

At a 60 s cadence and {large.delay_ms:g} ms, a group of {_n(per_group)} meters needs about
{cpu_at:.1f} s of CPU and {rss_at:.0f} MB per run: the resources to give each group's run (the
Helm values' requests per group, deploy/helm/values.yaml). Sizes past {large.meters} meters are
extrapolated along the line: measure a planned size with `uv run python -m bench --scale-check N`
before relying on it.

**What N groups cost the Dagster instance.** Each poll run writes {large.events} event rows
(whatever its size: {small.events} at {small.meters} meters) and one run row, every tick; the
daily purge job keeps {data.retention_days} days of runs (`DAGSTER_RUN_RETENTION_DAYS`), so the
rows kept level off there. {size_text}

{_instance_table(data, m)}
"""


def page_section(run: Run) -> str:
    """The section for docs/performance.md (bench/page.py), or why it is missing."""
    data = inputs(run)
    if data is None:
        return f"{HEADING}\n\nNot measured in this run: it needs cold runs at two fleet sizes.\n"
    return section(data)

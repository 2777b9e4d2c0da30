"""docs/performance.md's capacity section is what bench/capacity.py computes: its inputs table,
read back from the page, gives exactly the section's text again, and those inputs are the
figures of the page's own cold-run table (the benchmark's, not typed in). The computation
itself is checked on a saved run (bench/cold_baseline.json) and on its arithmetic."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is not a package of the project

from bench import capacity, page, report  # noqa: E402
from energymon_pipeline import settings  # noqa: E402

DOC = ROOT / "docs" / "performance.md"


def doc_section() -> str:
    text = DOC.read_text(encoding="utf-8")
    assert capacity.HEADING in text, "docs/performance.md has no capacity section"
    start = text.index(capacity.HEADING)
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)].strip()


def table(text: str, first_column: str) -> list[dict[str, str]]:
    """The rows of the first markdown table whose header starts with `first_column`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)))
    return rows


def test_the_section_is_what_the_computation_gives():
    section = doc_section()
    data = capacity.inputs_from_section(section)
    assert page.reflow(capacity.section(data)).strip() == section


def test_its_inputs_are_the_pages_cold_run_figures():
    data = capacity.inputs_from_section(doc_section())
    text = DOC.read_text(encoding="utf-8")
    cold = {row["meters"]: row for row in table(text, "meters | delay | cold run s")}
    assert [str(s.meters) for s in data.sizes] == list(cold)
    for size in data.sizes:
        row = cold[str(size.meters)]
        assert float(row["cold run s"]) == size.cold_s
        assert float(row["empty run s"]) == size.empty_s
        assert float(row["CPU s"]) == size.cpu_s
        assert row["peak RSS"] == f"{size.rss_mb:.0f} MB"
        assert int(row["event rows"]) == size.events
    assert data.retention_days == settings.pipeline({}).run_retention_days


def test_the_inputs_of_a_saved_run():
    run = report.run_from_json((ROOT / "bench" / "cold_baseline.json").read_text())
    data = capacity.inputs(run)
    medians = {c.meters: c for c in report.cold_sizes(run)}
    assert [s.meters for s in data.sizes] == sorted(medians)
    for size in data.sizes:
        c = medians[size.meters]
        assert size.cold_s == round(c.seconds("cold"), 3)
        assert size.cpu_s == round(c.cpu(), 3)
        assert size.events == round(c.events())
        assert size.requests_per_meter == 2  # SDM630: two planned requests
    # The page reads back what the computation wrote.
    assert capacity.inputs_from_section(page.reflow(capacity.section(data))) == data


def test_the_arithmetic():
    sizes = (
        capacity.Size(10, 20, cold_s=2.0, empty_s=1.0, cpu_s=1.5, rss_mb=100, events=40,
                      event_bytes=20_000, requests_per_meter=2),
        capacity.Size(510, 20, cold_s=3.0, empty_s=1.0, cpu_s=2.0, rss_mb=150, events=40,
                      event_bytes=20_000, requests_per_meter=2),
    )  # fmt: skip
    data = capacity.Inputs(sizes, concurrency=50, retention_days=14)
    m = capacity.model(data)
    assert m.wall_per_meter_s == pytest.approx(0.002)  # (3.0 - 2.0) / 500
    assert m.wall_fixed_s == pytest.approx(1.98)
    assert m.cpu_per_meter_s == pytest.approx(0.001) and m.rss_per_meter_mb == pytest.approx(0.1)
    # Half of 60 s, less the fixed part, at 2 ms a meter.
    assert m.meters_per_group(60, 20, 50) == int((30 - 1.98) / 0.002)
    # 80 ms more per request, 2 requests, 50 meters at a time: 3.2 ms more per meter.
    assert m.wall_per_meter_at(100, 50) == pytest.approx(0.0052)
    assert m.per_link(60, 100) == 150  # 30 s / (2 x 100 ms)
    section = capacity.section(data)
    # 16 groups, a tick a minute: 23,040 runs and 921,600 event rows a day; 14 days kept;
    # 20,000 bytes a run x 23,040 runs x 14 days.
    assert "| 16 | 23,040 | 921,600 | 12,902,400 | 6.45 GB |" in section
    with_unmeasured = replace(data, sizes=tuple(replace(s, event_bytes=None) for s in sizes))
    assert "| 16 | 23,040 | 921,600 | 12,902,400 | not measured |" in capacity.section(
        with_unmeasured
    )

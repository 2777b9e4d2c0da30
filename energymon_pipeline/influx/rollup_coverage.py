"""Which meters a stored rollup covers: the question the rollup assets' checks ask of InfluxDB.

A rollup point exists for a meter and a window only when the meter has readings in it
(rollup.py invents nothing over a gap), so an enabled meter missing here had no readings in
the window, or the window was not rolled up (yet)."""

from __future__ import annotations

from datetime import datetime

from energymon_pipeline.influx.points import timestamp_ms
from energymon_pipeline.influx.writer import InfluxWriter


def rolled_up_meters(
    writer: InfluxWriter, measurement: str, start: datetime, end: datetime
) -> set[str]:
    """The `id` tags (meter ids as text) with at least one point of the rollup `measurement`
    (rollup.HOURLY or rollup.DAILY) stamped in [start, end)."""
    series = writer.query(
        f'SELECT count("count") FROM "{measurement}" WHERE time >= {timestamp_ms(start)}ms '
        f'AND time < {timestamp_ms(end)}ms GROUP BY "id"'
    )
    return {tags.get("id", "") for _, tags, rows in series if rows and rows[0].get("count")}

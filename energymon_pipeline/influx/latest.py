"""The newest stored reading of each measurement per meter, read back from InfluxDB.

What `energymon latest` shows, so a newcomer sees the data without Grafana. It reads the point
shape of points.py: measurement = register name, field `value`, tags `id`, `description`,
`dataunit`, `type`. The pipeline's own measurements (`energymon_*`: health, rollups) are not
readings and are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from energymon_pipeline.influx.points import FIELD
from energymon_pipeline.influx.writer import InfluxError, InfluxWriter

PIPELINE_PREFIX = "energymon_"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class LatestReading:
    """One meter's newest value of one measurement. `meter_id` is the `id` tag as a number
    (as the registry has it), or the tag's text when it is not one."""

    meter_id: int | str | None
    description: str | None
    measurement: str
    value: float
    unit: str | None
    meter_type: str | None
    time: datetime

    @property
    def time_text(self) -> str:
        """ISO 8601 in UTC, to the millisecond (the points' precision)."""
        return self.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def as_dict(self) -> dict[str, Any]:
        return {
            "meter_id": self.meter_id,
            "description": self.description,
            "measurement": self.measurement,
            "value": self.value,
            "unit": self.unit,
            "time": self.time_text,
        }


def _meter_id(tag: str | None) -> int | str | None:
    if not tag:
        return None
    try:
        return int(tag)
    except ValueError:
        return tag


def _sort_key(reading: LatestReading) -> tuple:
    meter = reading.meter_id
    return (
        meter is None,
        isinstance(meter, str),
        meter if isinstance(meter, int) else 0,
        str(meter),
        reading.measurement,
    )


def latest_readings(
    writer: InfluxWriter, policies: Iterable[str | None] = (None,)
) -> list[LatestReading]:
    """The newest reading of every (meter, measurement) in the writer's database, ordered by
    meter id, then measurement. `policies` are the retention policies to look in (None: the
    database's default one); when a series is in several, the newest point wins. A missing
    database or retention policy reads as no readings; anything else InfluxDB refuses raises
    the writer's one-line `InfluxError`."""
    newest: dict[tuple[str | None, str], LatestReading] = {}
    for policy in policies:
        source = f'"{policy}"./.*/' if policy else "/.*/"
        try:
            series = writer.query(
                f'SELECT last("{FIELD}"), "description", "dataunit", "type" '
                f'FROM {source} GROUP BY "id"',
                epoch="ms",
            )
        except InfluxError as error:
            if policy and "retention policy not found" in str(error):
                continue  # INFLUXDB_RAW_RETENTION set, but no run has created the policy yet
            raise
        for measurement, tags, rows in series:
            if measurement.startswith(PIPELINE_PREFIX):
                continue
            for row in rows:
                if row.get("last") is None:
                    continue
                reading = LatestReading(
                    meter_id=_meter_id(tags.get("id")),
                    description=row.get("description"),
                    measurement=measurement,
                    # A reading's value is a float field; InfluxDB's JSON writes -3.0 as -3.
                    value=float(row["last"]),
                    unit=row.get("dataunit"),
                    meter_type=row.get("type"),
                    time=_EPOCH + timedelta(milliseconds=row["time"]),
                )
                key = (tags.get("id"), measurement)
                if key not in newest or reading.time > newest[key].time:
                    newest[key] = reading
    return sorted(newest.values(), key=_sort_key)

"""Readings -> InfluxDB 1.x line protocol, in the point shape the existing dashboards query.

Compatibility contract (seed/ORIGINAL-SYSTEM.md, "InfluxDB point shape"): the measurement is
the register's measurement name, the one field is `value` (float), the tags are `id` (meter id
as text), `description` and `dataunit`, plus `type` (the meter type). A tag whose value is
missing or empty is left out, since line protocol has no empty tag values.

Every point carries its read time, so a batch re-sent from the spool overwrites itself instead
of duplicating. Timestamps are whole milliseconds since the epoch (UTC); `PRECISION` is what
the writer sends as the `precision` parameter, so the two cannot disagree. Sub-millisecond
parts are truncated.

NaN and infinite values are never written: validation drops them earlier, and this module
skips any that get through (with a warning), because InfluxDB cannot store them and a
dashboard would read a substitute as a real value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable
from datetime import datetime

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PRECISION = "ms"
"""Timestamp precision of every line built here (the `precision` query parameter of /write)."""

FIELD = "value"
POLL_MEASUREMENT = "energymon_poll"
READING_COLUMNS = ("time", "meter_id", "description", "meter_type", "measurement", "unit", "value")

_EPOCH = pd.Timestamp(0, tz="UTC")
_ONE_MS = pd.Timedelta(milliseconds=1)

# Line protocol escapes with a backslash: commas and spaces in measurement names; commas,
# spaces and equals signs in tag keys and values. Newlines cannot be escaped at all.
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_TAG_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\="})


class PointError(ValueError):
    """A reading that cannot be expressed in line protocol (a bug upstream, not bad luck)."""


def _check_text(text: str, what: str) -> None:
    if "\n" in text or "\r" in text:
        raise PointError(f"{what} {text!r} contains a line break, which line protocol cannot hold")


def _drop_trailing_backslashes(text: str, what: str) -> str:
    # InfluxDB 1.x treats a separator preceded by a backslash as escaped, whatever comes before
    # that backslash, so a name or tag value ending in a backslash cannot be written at all
    # ("invalid tag format"). Backslashes elsewhere are kept as they are.
    if not text.endswith("\\"):
        return text
    kept = text.rstrip("\\")
    log.warning(
        "%s %r ends in a backslash, which line protocol cannot hold; written as %r",
        what,
        text,
        kept,
    )
    return kept


def escape_measurement(name: str) -> str:
    """A measurement name as line protocol text. Empty names, names starting with `#` (a
    comment line) and line breaks are refused."""
    if not isinstance(name, str) or not name:
        raise PointError(f"measurement name {name!r} is empty or not text")
    _check_text(name, "measurement name")
    if name.startswith("#"):
        raise PointError(f"measurement name {name!r} starts with '#', which reads as a comment")
    kept = _drop_trailing_backslashes(name, "measurement name")
    if not kept:
        raise PointError(f"measurement name {name!r} is only backslashes")
    return kept.translate(_MEASUREMENT_ESCAPES)


def escape_tag(text: str) -> str:
    """A tag key or tag value as line protocol text (trailing backslashes dropped, see above;
    the result may be empty)."""
    _check_text(text, "tag")
    return _drop_trailing_backslashes(text, "tag").translate(_TAG_ESCAPES)


def _present(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return value is not pd.NA and value is not pd.NaT and str(value) != ""


def tag_set(tags: dict[str, object]) -> str:
    """`,key=value,...` for the present tags, keys sorted (InfluxDB's preferred order);
    values of None, NaN or "" are left out."""
    parts = []
    for key, value in sorted(tags.items()):
        if _present(value) and (text := escape_tag(str(value))):
            parts.append(f",{escape_tag(key)}={text}")
    return "".join(parts)


def timestamp_ms(moment: datetime | pd.Timestamp) -> int:
    """Milliseconds since the epoch of a timezone-aware datetime (naive ones are refused:
    their meaning depends on the machine's TZ)."""
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is None:
        raise PointError(f"timestamp {moment!r} has no timezone; readings are stamped in UTC")
    return (stamp - _EPOCH) // _ONE_MS


def _float_text(value: float) -> str:
    return repr(float(value))


def reading_lines(readings: pd.DataFrame) -> list[str]:
    """One line per reading row, in row order.

    `readings` has the columns in `READING_COLUMNS`: `time` timezone-aware, `meter_id` int,
    `description`, `meter_type`, `unit` text or None, `measurement` text, `value` float.
    Rows whose value is NaN or infinite are skipped with a warning.
    """
    missing = [column for column in READING_COLUMNS if column not in readings.columns]
    if missing:
        raise PointError(f"readings lack the column(s) {', '.join(missing)}")
    if readings.empty:
        return []
    times = readings["time"]
    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        raise PointError(f"readings column 'time' must be timezone-aware (UTC), not {times.dtype}")
    values = readings["value"].to_numpy(dtype=float, na_value=np.nan)
    finite = np.isfinite(values)
    if not finite.all():
        skipped = int((~finite).sum())
        log.warning("skipped %d reading(s) whose value is NaN or infinite", skipped)
        readings = readings.loc[finite]
        values = values[finite]
        times = readings["time"]
    if times.isna().any():
        raise PointError("readings column 'time' has missing timestamps")
    stamps = ((times - _EPOCH) // _ONE_MS).astype("int64").tolist()

    measurements: dict[object, str] = {}
    measurement_text = []
    for name in readings["measurement"].tolist():
        text = measurements.get(name)
        if text is None:
            text = measurements[name] = escape_measurement(name)
        measurement_text.append(text)

    # Tag keys sort as dataunit < description < id < type, so a point's tag set is its unit's
    # part followed by its meter's part: escape each distinct unit and each meter once (a few
    # units and one entry per meter, not one per meter and unit).
    unit_tags: dict[Hashable, str] = {}
    meter_tags: dict[tuple[Hashable, ...], str] = {}
    tag_text = []
    for unit, description, meter_id, meter_type in zip(
        readings["unit"].tolist(),
        readings["description"].tolist(),
        readings["meter_id"].tolist(),
        readings["meter_type"].tolist(),
        strict=True,
    ):
        unit_text = unit_tags.get(unit)
        if unit_text is None:
            unit_text = unit_tags[unit] = tag_set({"dataunit": unit})
        meter_key = (description, meter_id, meter_type)
        meter_text = meter_tags.get(meter_key)
        if meter_text is None:
            meter_text = meter_tags[meter_key] = tag_set(
                {
                    "description": description,
                    "id": None if not _present(meter_id) else int(meter_id),
                    "type": meter_type,
                }
            )
        tag_text.append(unit_text + meter_text)

    return [
        f"{measurement}{tags} {FIELD}={value!r} {stamp}"
        for measurement, tags, value, stamp in zip(
            measurement_text, tag_text, values.tolist(), stamps, strict=True
        )
    ]


def poll_health_line(
    *,
    time: datetime,
    meter_id: int,
    description: str | None,
    meter_type: str | None,
    ok: bool,
    latency_ms: float | None,
    requests: int,
    values: int,
    errors: int,
) -> str:
    """One `energymon_poll` point: how polling one meter went in one run.

    Field types stay fixed (InfluxDB refuses a field whose type changes within a shard):
    `ok` boolean, `latency_ms` float (left out when unknown), `requests`, `values` and
    `errors` integers.
    """
    fields = [f"ok={'true' if ok else 'false'}"]
    if latency_ms is not None:
        if not math.isfinite(latency_ms):
            raise PointError(f"latency_ms {latency_ms!r} of meter {meter_id} is not finite")
        fields.append(f"latency_ms={_float_text(latency_ms)}")
    fields += [f"requests={int(requests)}i", f"values={int(values)}i", f"errors={int(errors)}i"]
    tags = tag_set({"description": description, "id": meter_id, "type": meter_type})
    return f"{POLL_MEASUREMENT}{tags} {','.join(fields)} {timestamp_ms(time)}"


SPOOL_MEASUREMENT = "energymon_spool"


def spool_health_line(*, time: datetime, batches: int, points: int, bytes_: int) -> str:
    """One `energymon_spool` point: the write-ahead backlog after a poll run's flush, for the
    pipeline health dashboard (a growing backlog means InfluxDB is not taking writes)."""
    fields = f"batches={int(batches)}i,points={int(points)}i,bytes={int(bytes_)}i"
    return f"{SPOOL_MEASUREMENT} {fields} {timestamp_ms(time)}"


CONNECTIVITY_MEASUREMENT = "energymon_connectivity"


def connectivity_line(
    *,
    time: datetime,
    meter_id: int,
    description: str | None,
    meter_type: str | None,
    result: str,
    ok: bool,
    latency_ms: float | None,
) -> str:
    """One `energymon_connectivity` point: the outcome of a meter's connectivity check."""
    fields = [f"ok={'true' if ok else 'false'}", f'result="{_string_field(result)}"']
    if latency_ms is not None and math.isfinite(latency_ms):
        fields.append(f"latency_ms={_float_text(latency_ms)}")
    tags = tag_set({"description": description, "id": meter_id, "type": meter_type})
    return f"{CONNECTIVITY_MEASUREMENT}{tags} {','.join(fields)} {timestamp_ms(time)}"


def _string_field(text: str) -> str:
    """A string field value's escaping: backslashes and double quotes; no line breaks."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")

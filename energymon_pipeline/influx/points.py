"""Readings -> InfluxDB 1.x line protocol, in the point shape the existing dashboards query.

Compatibility contract (the original system's point shape, see docs/metrics.md): the
measurement is the register's measurement name, the one field is `value` (float), the tags are
`id` (meter id as text), `description` and `dataunit`, plus `type` (the meter type). A tag
whose value is missing or empty is left out, since line protocol has no empty tag values.

Every point carries its read time, so a batch re-sent from the spool overwrites itself instead
of duplicating. Timestamps are whole milliseconds since the epoch (UTC); `PRECISION` is what
the writer sends as the `precision` parameter, so the two cannot disagree. Sub-millisecond
parts are truncated.

NaN and infinite values are never written: validation drops them earlier, and this module
skips any that get through (counted against their meter), because InfluxDB cannot store them
and a dashboard would read a substitute as a real value. Text that line protocol cannot hold
(a registry row written past validation) costs only the values that carry it.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PRECISION = "ms"
"""Timestamp precision of every line built here (the `precision` query parameter of /write)."""

FIELD = "value"
POLL_MEASUREMENT = "energymon_poll"
READING_COLUMNS = ("time", "meter_id", "description", "meter_type", "measurement", "unit", "value")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
# pandas is imported by the functions that use it: a poll run's process imports this module
# with its code location, before it reads, and pandas only after (ops/run_process.py).

# Line protocol escapes with a backslash: commas and spaces in measurement names; commas,
# spaces and equals signs in tag keys and values. Newlines cannot be escaped at all.
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_TAG_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\="})
# What makes a tag key or value need more than itself: escapes, a backslash, a line break.
_TAG_SPECIAL = re.compile(r"[,= \\\n\r]")


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
    if _TAG_SPECIAL.search(text) is None:  # most texts: as they are
        return text
    _check_text(text, "tag")
    return _drop_trailing_backslashes(text, "tag").translate(_TAG_ESCAPES)


def _present(value: object) -> bool:
    if value is None:
        return False
    kind = type(value)
    if kind is str:
        return value != ""
    if kind is int:
        return True
    if isinstance(value, float) and math.isnan(value):
        return False
    import pandas as pd

    return value is not pd.NA and value is not pd.NaT and str(value) != ""


def tag_set(tags: dict[str, object]) -> str:
    """`,key=value,...` for the present tags, keys sorted (InfluxDB's preferred order);
    values of None, NaN or "" are left out."""
    parts = []
    for key, value in sorted(tags.items()):
        if _present(value) and (text := escape_tag(str(value))):
            parts.append(f",{escape_tag(key)}={text}")
    return "".join(parts)


@functools.lru_cache(maxsize=16384)
def meter_tag_set(description: object, meter_id: int | None, meter_type: object) -> str:
    """A meter's tags (`description`, `id`, `type`) as `tag_set` gives them, encoded once per
    process: a run's readings and its health points carry the same meter tags. A text that
    cannot be encoded raises PointError each time (errors are not cached)."""
    return tag_set({"description": description, "id": meter_id, "type": meter_type})


def timestamp_ms(moment: datetime | pd.Timestamp) -> int:
    """Milliseconds since the epoch of a timezone-aware datetime (naive ones are refused:
    their meaning depends on the machine's TZ)."""
    if moment.tzinfo is None:
        raise PointError(f"timestamp {moment!r} has no timezone; readings are stamped in UTC")
    # Exact integer arithmetic on the datetime (a pandas Timestamp is one): no float rounding.
    return (moment - _EPOCH) // _ONE_MS


def _float_text(value: float) -> str:
    return repr(float(value))


@dataclass
class EncodedReadings:
    """Line protocol for a readings frame, and what could not be encoded."""

    lines: list[str]
    #: Values left out, per (meter id, reason): not finite, or text line protocol cannot hold.
    dropped: Counter = field(default_factory=Counter)
    #: Lines per meter id.
    written: Counter = field(default_factory=Counter)


def encode_readings(readings: pd.DataFrame) -> EncodedReadings:
    """One line per reading row, in row order; a row that cannot be expressed costs only
    itself.

    `readings` has the columns in `READING_COLUMNS`: `time` timezone-aware, `meter_id` int,
    `description`, `meter_type`, `unit` text or None, `measurement` text, `value` float.
    Rows whose value is NaN or infinite, or whose measurement name or tags line protocol
    cannot hold (a line break, a leading `#`: a registry row written past validation), are
    left out and counted against their meter, with one warning per meter and reason. A frame
    without the columns or with naive timestamps is a bug upstream and raises PointError.
    """
    import pandas as pd

    missing = [column for column in READING_COLUMNS if column not in readings.columns]
    if missing:
        raise PointError(f"readings lack the column(s) {', '.join(missing)}")
    dropped: Counter = Counter()
    written: Counter = Counter()
    if readings.empty:
        return EncodedReadings([], dropped, written)
    times = readings["time"]
    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        raise PointError(f"readings column 'time' must be timezone-aware (UTC), not {times.dtype}")
    values = readings["value"].to_numpy(dtype=float, na_value=np.nan)
    keep = np.isfinite(values) & times.notna().to_numpy()
    meter_ids = readings["meter_id"].tolist()
    if not keep.all():
        for index in np.flatnonzero(~keep):
            reason = "not finite" if not np.isfinite(values[index]) else "no timestamp"
            dropped[(meter_ids[index], reason)] += 1
        readings = readings.loc[keep]
        values = values[keep]
        meter_ids = readings["meter_id"].tolist()
        times = readings["time"]
    epoch, one_ms = pd.Timestamp(0, tz="UTC"), pd.Timedelta(milliseconds=1)
    stamps = ((times - epoch) // one_ms).astype("int64").to_numpy()

    # A line is its measurement's text, its unit's tag and its meter's tags (tag keys sort as
    # dataunit < description < id < type), then the value and the time. Each distinct
    # measurement, unit and meter is encoded once and the texts are taken per row as whole
    # arrays; a text that cannot be encoded is its PointError and costs the rows that use it.
    measurement_codes, measurement_texts = _encode_distinct(
        readings["measurement"], escape_measurement
    )
    unit_codes, unit_texts = _encode_distinct(
        readings["unit"], lambda unit: tag_set({"dataunit": unit})
    )
    meter_codes, meter_texts = _encode_distinct_meters(readings)
    parts = (
        (measurement_codes, measurement_texts),
        (unit_codes, unit_texts),
        (meter_codes, meter_texts),
    )
    bad = np.zeros(len(values), dtype=bool)
    for codes, texts in parts:
        bad |= np.array([isinstance(t, PointError) for t in texts], dtype=bool)[codes]
    if bad.any():
        for index in np.flatnonzero(bad):
            problem = next(
                texts[codes[index]]
                for codes, texts in parts
                if isinstance(texts[codes[index]], PointError)
            )
            dropped[(meter_ids[index], str(problem))] += 1
        good = ~bad
        parts = tuple((codes[good], texts) for codes, texts in parts)
        values, stamps = values[good], stamps[good]
        meter_ids = [m for m, b in zip(meter_ids, bad.tolist(), strict=True) if not b]
    lines = []
    if len(values):
        # Each row's text before its value ("<measurement><tags> value=") and after it
        # (" <time>") are whole-array concatenations of each distinct part's text; only the
        # value is formatted per row.
        field = np.array([f" {FIELD}="], dtype=object)
        head = None
        for codes, texts in parts:
            column = np.array([t if isinstance(t, str) else "" for t in texts], dtype=object)
            head = column[codes] if head is None else head + column[codes]
        distinct_stamps, stamp_codes = np.unique(stamps, return_inverse=True)
        tails = np.array([f" {stamp}" for stamp in distinct_stamps.tolist()], dtype=object)
        lines = [
            f"{start}{value!r}{end}"
            for start, value, end in zip(
                (head + field).tolist(), values.tolist(), tails[stamp_codes].tolist(), strict=True
            )
        ]
    written = Counter(meter_ids)
    for (meter_id, reason), count in sorted(dropped.items(), key=str):
        log.warning("meter %s: %d value(s) not written: %s", meter_id, count, reason)
    return EncodedReadings(lines, dropped, written)


def _encode_distinct(column: pd.Series, encode) -> tuple[np.ndarray, list[str | PointError]]:
    """Row codes into the column's distinct values, and each distinct value encoded."""
    import pandas as pd

    codes, distinct = pd.factorize(column, use_na_sentinel=False)
    return codes, [_encoded(encode, value) for value in distinct]


def _encode_distinct_meters(readings: pd.DataFrame) -> tuple[np.ndarray, list[str | PointError]]:
    """Row codes into the distinct (description, meter id, type) triples, and their tag sets."""
    import pandas as pd

    codes = np.zeros(len(readings), dtype=np.int64)
    for name in ("description", "meter_id", "meter_type"):
        column_codes, distinct = pd.factorize(readings[name], use_na_sentinel=False)
        codes, _ = pd.factorize(codes * len(distinct) + column_codes)
    first = np.unique(codes, return_index=True)[1]
    columns = [
        readings[name].to_numpy()[first] for name in ("description", "meter_id", "meter_type")
    ]
    texts = []
    for description, meter_id, meter_type in zip(*columns, strict=True):
        meter_id = None if not _present(meter_id) else int(meter_id)
        try:
            texts.append(meter_tag_set(description, meter_id, meter_type))
        except PointError as error:
            texts.append(error)
    return codes, texts


def _encoded(encode, value) -> str | PointError:
    try:
        return encode(value)
    except PointError as error:
        return error


def reading_lines(readings: pd.DataFrame) -> list[str]:
    """The lines of `encode_readings`, for callers that only count what was written."""
    return encode_readings(readings).lines


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
    dropped: int = 0,
    late_s: float | None = None,
) -> str:
    """One `energymon_poll` point: how polling one meter went in one run.

    Field types stay fixed (InfluxDB refuses a field whose type changes within a shard):
    `ok` boolean, `latency_ms` and `late_s` floats (left out when unknown), `requests`,
    `values` (written), `dropped` (read but not written: not finite, out of range,
    unencodable) and `errors` integers. `late_s`: how long after its scheduled second the
    meter's first request of the run went out (scheduled runs only).
    """
    fields = [f"ok={'true' if ok else 'false'}"]
    for name, value in (("latency_ms", latency_ms), ("late_s", late_s)):
        if value is None:
            continue
        if not math.isfinite(value):
            raise PointError(f"{name} {value!r} of meter {meter_id} is not finite")
        fields.append(f"{name}={_float_text(value)}")
    fields += [
        f"requests={int(requests)}i",
        f"values={int(values)}i",
        f"dropped={int(dropped)}i",
        f"errors={int(errors)}i",
    ]
    tags = meter_tag_set(description, meter_id, meter_type)
    return f"{POLL_MEASUREMENT}{tags} {','.join(fields)} {timestamp_ms(time)}"


SPOOL_MEASUREMENT = "energymon_spool"


def spool_health_line(
    *,
    time: datetime,
    batches: int,
    points: int,
    bytes_: int,
    lost_batches: int = 0,
    lost_points: int = 0,
    rejected_batches: int = 0,
) -> str:
    """One `energymon_spool` point: the write-ahead backlog after a poll run's flush, for the
    pipeline health dashboard (a growing backlog means InfluxDB is not taking writes), and
    what the run lost: batches the spool's bounds deleted unsent (`lost_*`) and batches set
    aside in rejected/ (`rejected_batches`). All integers."""
    fields = (
        f"batches={int(batches)}i,points={int(points)}i,bytes={int(bytes_)}i,"
        f"lost_batches={int(lost_batches)}i,lost_points={int(lost_points)}i,"
        f"rejected_batches={int(rejected_batches)}i"
    )
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
    tags = meter_tag_set(description, meter_id, meter_type)
    return f"{CONNECTIVITY_MEASUREMENT}{tags} {','.join(fields)} {timestamp_ms(time)}"


def _string_field(text: str) -> str:
    """A string field value's escaping: backslashes and double quotes; no line breaks."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")

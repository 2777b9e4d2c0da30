"""InfluxQL retention durations: what a user may configure for the raw readings' policy, and
how a stored policy's duration compares with it.

A user writes 90d, 12w or 2160h; InfluxDB reports the same policy back as 2160h0m0s, so the
two are compared in hours, not as text.
"""

from __future__ import annotations

import re

RETENTION_ALLOWED = "a whole number of hours, days or weeks, at least 1h (e.g. 90d, 12w, 2160h)"
_HOURS_PER_UNIT = {"h": 1, "d": 24, "w": 168}


def retention_hours(duration: str) -> float | None:
    """Hours of an InfluxQL retention duration as written (90d, 12w, 2160h) or as InfluxDB
    reports it (2160h0m0s); None when it is neither."""
    text = duration.strip()
    short = re.fullmatch(r"(\d+)([hdw])", text)
    if short:
        return int(short[1]) * _HOURS_PER_UNIT[short[2]]
    full = re.fullmatch(r"(\d+)h(\d+)m(\d+)s", text)
    if full:
        return int(full[1]) + int(full[2]) / 60 + int(full[3]) / 3600
    return None


def is_retention_period(text: str) -> bool:
    """Whether `text` is a duration a user may configure (`RETENTION_ALLOWED`). Zero is
    refused: InfluxDB reads a 0 duration as "keep forever", the opposite of what was asked."""
    hours = retention_hours(text) if re.fullmatch(r"\d+[hdw]", text) else None
    return hours is not None and hours >= 1

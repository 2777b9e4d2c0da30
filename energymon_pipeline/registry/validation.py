"""The rules a meter or register row must satisfy, with messages that say what is allowed.

Shared by the CLI, the CSV import and the poll's definition loader, so a row is judged the
same way wherever it comes from. Each check returns problems as (column, message) pairs
instead of raising, so an import can report every bad cell of every row at once.
"""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from energymon_pipeline.modbus.types import (
    MAX_REGISTERS_PER_REQUEST,
    PARITIES,
    DataType,
    FunctionCode,
)
from energymon_pipeline.registry.tables import FRAMERS

Problem = tuple[str, str]

DATA_TYPES_ALLOWED = ", ".join(f"{t.value} {t.name}" for t in DataType)
FUNCTION_CODES_ALLOWED = "1 coils, 2 discrete inputs, 3 holding registers, 4 input registers"
ORDERS_ALLOWED = "1 little-endian, 2 big-endian"


def _as_int(value: Any) -> int | None:
    """An int from an int or an integral string/float; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            return None
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


#: Columns whose text becomes InfluxDB line protocol (measurement name, tag values).
LINE_PROTOCOL_COLUMNS = frozenset({"type", "description", "measurement_name", "data_unit"})


def _control_character(text: str) -> str | None:
    """The first control character of `text` (line breaks, tabs, NUL...), if any."""
    return next((c for c in text if unicodedata.category(c) == "Cc"), None)


def _text(
    row: Mapping[str, Any], column: str, max_len: int, required: bool, problems: list[Problem]
) -> str | None:
    value = row.get(column)
    text = None if value is None else str(value).strip()
    if not text:
        if required:
            problems.append((column, f"{column} is empty; allowed: 1 to {max_len} characters"))
        return None
    if len(text) > max_len:
        problems.append(
            (
                column,
                f"{column} {text!r} is {len(text)} characters long; allowed: at most {max_len}",
            )
        )
    control = _control_character(text)
    if control is not None:
        kind = (
            "a line break" if control in "\n\r" else f"the control character U+{ord(control):04X}"
        )
        problems.append(
            (column, f"{column} {text!r} contains {kind}; allowed: printable text on one line")
        )
    elif column in LINE_PROTOCOL_COLUMNS and text.endswith("\\"):
        problems.append(
            (
                column,
                f"{column} {text!r} ends in a backslash, which InfluxDB line protocol cannot "
                "hold; allowed: any text not ending in '\\'",
            )
        )
    return text


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _host(row: Mapping[str, Any], problems: list[Problem]) -> str | None:
    """A hostname or an IP address: no scheme, port, path or spaces."""
    host = _text(row, "host", 64, True, problems)
    if host is None or any(column == "host" for column, _ in problems):
        return host
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    # All-digit labels are a mistyped IPv4 address (192.168.1.300), not a name.
    if not all(_HOST_LABEL.fullmatch(label) for label in labels) or all(
        label.isdigit() for label in labels
    ):
        problems.append(
            (
                "host",
                f"host {host!r} is not a hostname or IP address; allowed: a name such as "
                "meter1.local or an address such as 192.168.1.10, without scheme, port, path "
                "or spaces (the port is its own setting)",
            )
        )
    return host


def _integer(
    row: Mapping[str, Any],
    column: str,
    low: int,
    high: int,
    problems: list[Problem],
    allowed: str | None = None,
    required: bool = True,
) -> int | None:
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            problems.append((column, f"{column} is empty; allowed: {allowed or f'{low}-{high}'}"))
        return None
    number = _as_int(value)
    if number is None or not low <= number <= high:
        shown = str(value).strip() if isinstance(value, str) else value
        what = "is not allowed" if number is not None else "is not a whole number"
        problems.append((column, f"{column} {shown} {what}; allowed: {allowed or f'{low}-{high}'}"))
        return None
    return number


def _number(
    row: Mapping[str, Any], column: str, problems: list[Problem], default: float | None
) -> float | None:
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    number = _as_float(value)
    if number is None:
        problems.append((column, f"{column} {value!r} is not a finite number"))
    return number


def _flag(row: Mapping[str, Any], column: str, problems: list[Problem]) -> bool:
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    problems.append((column, f"{column} {value!r} is not allowed; allowed: 1 or 0 (true or false)"))
    return False


#: What a poll group may be called, in `energy_meters.poll_group` and in ENERGYMON_POLL_GROUPS.
POLL_GROUP_ALLOWED = "1-32 letters, digits, '-' or '_'"
#: The group of the meters without one (NULL `poll_group`).
DEFAULT_POLL_GROUP = "default"
_POLL_GROUP = re.compile(r"[A-Za-z0-9_-]{1,32}")


def is_poll_group(name: str) -> bool:
    return _POLL_GROUP.fullmatch(name) is not None


def _measurement(row: Mapping[str, Any], problems: list[Problem]) -> str | None:
    name = _text(row, "measurement_name", 64, True, problems)
    if name is not None and name.startswith("#"):
        problems.append(
            (
                "measurement_name",
                f"measurement_name {name!r} starts with '#', which InfluxDB line protocol reads "
                "as a comment; allowed: a name not starting with '#'",
            )
        )
    return name


def check_register(row: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Validate one register row; returns the normalized row and its problems."""
    problems: list[Problem] = []
    clean: dict[str, Any] = {
        "type": _text(row, "type", 32, True, problems),
        "register_address": _integer(
            row, "register_address", 0, 65535, problems, "0-65535 (zero-based protocol address)"
        ),
        "measurement_name": _measurement(row, problems),
        "data_unit": _text(row, "data_unit", 8, False, problems),
        "data_type": _integer(row, "data_type", 1, 8, problems, DATA_TYPES_ALLOWED),
        "function_code": _integer(row, "function_code", 1, 4, problems, FUNCTION_CODES_ALLOWED),
        "word_order": _integer(row, "word_order", 1, 2, problems, ORDERS_ALLOWED),
        "byte_order": _integer(row, "byte_order", 1, 2, problems, ORDERS_ALLOWED),
        "scale": _number(row, "scale", problems, 1.0),
        "offset": _number(row, "offset", problems, 0.0),
        "min_value": _number(row, "min_value", problems, None),
        "max_value": _number(row, "max_value", problems, None),
        "cumulative": _flag(row, "cumulative", problems),
    }
    if clean["scale"] == 0:
        problems.append(
            (
                "scale",
                "scale 0 would turn every reading into the offset; allowed: any non-zero number",
            )
        )
    low, high = clean["min_value"], clean["max_value"]
    if low is not None and high is not None and low > high:
        problems.append(("min_value", f"min_value {low:g} is above max_value {high:g}"))
    address, data_type, fc = clean["register_address"], clean["data_type"], clean["function_code"]
    if address is not None and data_type is not None and fc is not None:
        width = 1 if FunctionCode(fc).is_bit else DataType(data_type).words
        if address + width - 1 > 65535:
            problems.append(
                (
                    "register_address",
                    f"register_address {address} with data_type {data_type} "
                    f"({DataType(data_type).name}, {width} registers) runs past 65535",
                )
            )
    return clean, problems


def check_meter(row: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Validate one meter row (CLI input); returns the normalized row and its problems."""
    problems: list[Problem] = []
    serial = _serial_line(row, problems)
    if serial:
        # A serial meter's host and port are unused (host repeats the path for listings).
        clean: dict[str, Any] = {
            "host": _text(row, "host", 64, True, problems),
            "port": _integer(row, "port", 0, 65535, problems),
        }
    else:
        clean = {"host": _host(row, problems), "port": _integer(row, "port", 1, 65535, problems)}
    clean.update(serial)
    clean.update(
        {
            "slave_address": _integer(
                row, "slave_address", 0, 255, problems, "0-255 (Modbus unit id)"
            ),
            "type": _text(row, "type", 32, True, problems),
            "description": _text(row, "description", 64, False, problems),
        }
    )
    group = row.get("poll_group")
    if group is not None and str(group).strip():
        group = str(group).strip()
        if not is_poll_group(group):
            message = f"poll_group {group!r} is not allowed; allowed: {POLL_GROUP_ALLOWED}"
            problems.append(("poll_group", message))
        clean["poll_group"] = group
    if row.get("id") is not None:
        clean["id"] = _integer(row, "id", 0, 2**31 - 1, problems)
    framer = str(row.get("framer") or "socket").strip()
    if framer not in FRAMERS:
        problems.append(
            ("framer", f"framer {framer!r} is not allowed; allowed: {', '.join(FRAMERS)}")
        )
    clean["framer"] = framer
    timeout = row.get("timeout_s")
    if timeout is not None:
        value = _as_float(timeout)
        if value is None or not 0 < value <= 600:
            problems.append(
                (
                    "timeout_s",
                    f"timeout_s {timeout} is not allowed; allowed: 0-600 seconds, above 0",
                )
            )
        clean["timeout_s"] = value
    _plan_options(row, clean, problems)
    _link_settings(row, clean, problems)
    return clean, problems


def _optional_int(
    row: Mapping[str, Any], clean: dict[str, Any], column: str, low: int, high: int,
    problems: list[Problem], allowed: str | None = None,
) -> None:  # fmt: skip
    if row.get(column) is not None and not (isinstance(row[column], str) and not row[column]):
        clean[column] = _integer(row, column, low, high, problems, allowed)


SERIAL_PATH_ALLOWED = (
    "the serial device's absolute path, such as /dev/ttyUSB0, up to 255 characters"
)


def _serial_line(row: Mapping[str, Any], problems: list[Problem]) -> dict[str, Any]:
    """A serial meter's port and line settings (NULL = 9600 baud, N, 1 stop bit, 8 bits);
    empty for a Modbus TCP meter."""
    path = row.get("serial_port")
    if path is None or not str(path).strip():
        return {}
    clean: dict[str, Any] = {"serial_port": _text(row, "serial_port", 255, True, problems)}
    if clean["serial_port"] is not None and not clean["serial_port"].startswith("/"):
        problems.append(
            ("serial_port", f"serial_port {path!r} is not allowed; allowed: {SERIAL_PATH_ALLOWED}")
        )
    _optional_int(row, clean, "baudrate", 50, 4_000_000, problems, "50-4000000 bits per second")
    _optional_int(row, clean, "stopbits", 1, 2, problems, "1 or 2")
    _optional_int(row, clean, "bytesize", 7, 8, problems, "7 or 8 data bits")
    parity = row.get("parity")
    if parity is not None and str(parity).strip():
        parity = str(parity).strip().upper()
        if parity not in PARITIES:
            problems.append(
                ("parity", f"parity {row.get('parity')!r} is not allowed; allowed: N, E or O")
            )
        clean["parity"] = parity
    return clean


def _link_settings(row: Mapping[str, Any], clean: dict[str, Any], problems: list[Problem]) -> None:
    """The settings of the meter's link (modbus/links.py), where set: NULL means the default."""
    _optional_int(
        row, clean, "max_connections", 1, 64, problems,
        "1-64 (connections a poll opens to the link at once)",
    )  # fmt: skip
    _optional_int(
        row, clean, "inter_request_delay_ms", 0, 60_000, problems,
        "0-60000 milliseconds between requests on one connection",
    )  # fmt: skip
    delay = row.get("connect_delay_s")
    if delay is not None:
        value = _as_float(delay)
        if value is None or not 0 <= value <= 60:
            problems.append(
                (
                    "connect_delay_s",
                    f"connect_delay_s {delay} is not allowed; allowed: 0-60 seconds",
                )
            )
        clean["connect_delay_s"] = value


def _plan_options(row: Mapping[str, Any], clean: dict[str, Any], problems: list[Problem]) -> None:
    """The meter's request-planning overrides (modbus.types.PlanOptions), where set: NULL
    means the default, so an absent column stays absent."""
    if row.get("max_gap") is not None:
        clean["max_gap"] = _integer(
            row, "max_gap", 0, 2**31 - 1, problems, "0 or more (unread addresses a read may span)"
        )
    if row.get("max_registers_per_request") is not None:
        clean["max_registers_per_request"] = _integer(
            row,
            "max_registers_per_request",
            1,
            MAX_REGISTERS_PER_REQUEST,
            problems,
            f"1-{MAX_REGISTERS_PER_REQUEST} (the Modbus limit for one read)",
        )
    if row.get("single_register_reads") is not None:
        clean["single_register_reads"] = _flag(row, "single_register_reads", problems)

"""Reading a registers CSV in the original system's format.

The header is the original's bulk-load header
`type,register_address,measurement_name,data_unit,data_type,function_code,word_order,byte_order`
in any column order, optionally followed by the extension columns `scale`, `offset`,
`min_value`, `max_value`. Addresses are zero-based protocol addresses, used as written.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from energymon_pipeline.errors import RegistryError
from energymon_pipeline.registry.queries import RowProblem
from energymon_pipeline.registry.tables import (
    EXTENSION_REGISTER_COLUMNS,
    ORIGINAL_REGISTER_COLUMNS,
)

ALLOWED_COLUMNS = ORIGINAL_REGISTER_COLUMNS + EXTENSION_REGISTER_COLUMNS


Rows = list[tuple[int, dict[str, Any]]]


def read_registers_csv(path: Path | str) -> tuple[Rows, list[RowProblem]]:
    """The file's data rows, each with its line number, and the rows that could not be split
    into cells. A problem with the file as a whole (missing, unreadable, wrong header) raises
    RegistryError; bad cells are left for `insert_registers` to report together with these,
    so the user sees every bad row at once."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise RegistryError(f"{path}: no such file") from None
    except UnicodeDecodeError as error:
        raise RegistryError(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    except OSError as error:
        raise RegistryError(f"{path}: cannot read it ({error.strerror})") from None
    return parse_registers_csv(text, source=str(path))


def parse_registers_csv(text: str, source: str = "<csv>") -> tuple[Rows, list[RowProblem]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: Rows = []
    problems: list[RowProblem] = []
    read_up_to = 0
    for record in reader:
        # The record's first line: a quoted cell may span several lines.
        line, read_up_to = read_up_to + 1, reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in record]
            _check_header(header, source)
            continue
        if len(record) != len(header):
            problems.append(
                RowProblem(
                    line,
                    "*",
                    f"has {len(record)} fields; allowed: {len(header)}, one per header column",
                )
            )
            continue
        rows.append(
            (
                line,
                {name: (cell.strip() or None) for name, cell in zip(header, record, strict=True)},
            )
        )
    if header is None:
        raise RegistryError(
            f"{source}: empty file; expected the header {','.join(ORIGINAL_REGISTER_COLUMNS)}"
        )
    return rows, problems


def _check_header(header: list[str], source: str) -> None:
    unknown = [name for name in header if name not in ALLOWED_COLUMNS]
    if unknown:
        raise RegistryError(
            f"{source}: line 1: unknown column {unknown[0]!r}; "
            f"allowed: {', '.join(ALLOWED_COLUMNS)}"
        )
    missing = [name for name in ORIGINAL_REGISTER_COLUMNS if name not in header]
    if missing:
        raise RegistryError(
            f"{source}: line 1: missing column {missing[0]!r}; the header needs "
            f"{','.join(ORIGINAL_REGISTER_COLUMNS)} (extension columns optional: "
            f"{','.join(EXTENSION_REGISTER_COLUMNS)})"
        )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise RegistryError(f"{source}: line 1: column {repeated[0]!r} appears twice")

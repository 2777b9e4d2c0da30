"""How the commands print rows: an aligned plain-text table for a person, JSON for a script."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import click


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def print_json(rows: list[dict[str, Any]]) -> None:
    click.echo(json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in rows], indent=2))


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    """A plain aligned table: `columns` pairs a row key with its heading; None prints empty."""
    cells = [[heading for _, heading in columns]]
    for row in rows:
        cells.append(["" if row.get(key) is None else str(row.get(key)) for key, _ in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )

"""The `energymon` command: registry administration and ad-hoc checks from a shell.

This module is the root group and the list of command groups; each group lives in its own
module under `energymon_pipeline.commands`. User errors print one line on stderr and exit 1;
usage errors exit 2 (click's convention).
"""

from __future__ import annotations

import logging
import sys

import click

from energymon_pipeline.commands.alerts import alerts
from energymon_pipeline.commands.db import db_group
from energymon_pipeline.commands.discover import discover
from energymon_pipeline.commands.errors import UserErrorGroup
from energymon_pipeline.commands.latest import latest
from energymon_pipeline.commands.meters import meters
from energymon_pipeline.commands.profiles import profiles
from energymon_pipeline.commands.read import probe, read_meter
from energymon_pipeline.commands.registers import registers
from energymon_pipeline.commands.spool import spool

#: Every command under `energymon`, in no particular order (click lists them sorted).
COMMANDS: tuple[click.Command, ...] = (
    db_group,
    meters,
    registers,
    read_meter,
    probe,
    spool,
    profiles,
    latest,
    alerts,
    discover,
)


@click.group(cls=UserErrorGroup)
def cli() -> None:
    """energymon: Modbus TCP energy meter monitoring (registry and tools).

    The registry database is ENERGYMON_DATABASE_URL if set, else PostgreSQL from
    POSTGRES_HOST/PORT/USER/PASSWORD/DB if POSTGRES_HOST is set, else an SQLite file in the
    local data folder (ENERGYMON_DATA_DIR, default .energymon).
    """


for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:
    # The commands print what the library reports, one line each; without this, Python's
    # last-resort handler would print the library's log records a second time.
    logging.getLogger("energymon_pipeline").addHandler(logging.NullHandler())
    cli.main(prog_name="energymon")


if __name__ == "__main__":
    sys.exit(main())

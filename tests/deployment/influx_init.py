"""The influxdb:1.8 image's first start, as the tests reproduce it on the test influxd: what
its init-influxdb.sh creates from INFLUXDB_DB, INFLUXDB_WRITE_USER and INFLUXDB_READ_USER, then
our config/influxdb/initdb.d/*.sh, sourced by bash as the image sources them."""

from __future__ import annotations

import os
import stat
import subprocess

from deployment_files import ROOT

INIT_SCRIPTS = sorted((ROOT / "config" / "influxdb" / "initdb.d").glob("*.sh"))


def image_first_start(admin, database: str, users: dict[str, tuple[str, str]]) -> None:
    """What the influxdb:1.8 image's init-influxdb.sh does with INFLUXDB_DB and the
    INFLUXDB_WRITE_USER / INFLUXDB_READ_USER variables."""
    admin.query(f'CREATE DATABASE "{database}"', method="POST")
    for role, grant in (("write", "WRITE"), ("read", "READ")):
        name, password = users[role]
        for statement in (
            f"CREATE USER \"{name}\" WITH PASSWORD '{password}'",
            f'REVOKE ALL PRIVILEGES FROM "{name}"',
            f'GRANT {grant} ON "{database}" TO "{name}"',
        ):
            admin.query(statement, method="POST")


def run_init_scripts(admin, env: dict[str, str], workdir) -> list[str]:
    """Sources each config/influxdb/initdb.d/*.sh with bash as the image does, $INFLUX_CMD
    recording the statements; then runs them as the admin, as `influx -execute` would."""
    record = workdir / "statements.txt"
    recorder = workdir / "influx-recorder"
    recorder.write_text('#!/bin/sh\nprintf "%s\\n" "$1" >> "$RECORD"\n', encoding="utf-8")
    recorder.chmod(recorder.stat().st_mode | stat.S_IEXEC)
    for script in INIT_SCRIPTS:
        subprocess.run(
            ["bash", "-c", 'set -e; . "$1"', "init", str(script)],
            env={"PATH": os.environ["PATH"], "INFLUX_CMD": str(recorder), "RECORD": str(record),
                 **env},
            check=True,
            timeout=30,
        )  # fmt: skip
    statements = record.read_text(encoding="utf-8").splitlines() if record.exists() else []
    for statement in statements:
        admin.query(statement, method="POST")
    return statements

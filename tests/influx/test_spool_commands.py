"""`energymon spool status` and `energymon spool flush`, against a real influxd."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from click.testing import CliRunner

from energymon_pipeline.cli import cli
from energymon_pipeline.influx.spool import Spool


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_status_and_flush(influxd, influx_db, tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYMON_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("INFLUXDB_HOSTNAME", influxd.host)
    monkeypatch.setenv("INFLUXDB_PORT", str(influxd.port))
    monkeypatch.setenv("INFLUXDB_DB", influx_db)
    queue = Spool(tmp_path / "spool", 64 * 1024**2, 86400)
    queue.append(["m,id=1 value=1 1700000000000", "m,id=1 value=2 1700000001000"])
    queue.append(["m,id=1 value=3 1700000002000"])

    status = json.loads(run("spool", "status", "--json").stdout)
    assert (status["batches"], status["points"], status["rejected_batches"]) == (2, 3, 0)
    assert run("spool", "status").stdout.startswith("2 batch(es), 3 point(s), ")

    flushed = run("spool", "flush")
    assert flushed.exit_code == 0, flushed.stderr
    assert flushed.stdout.strip() == "sent 2 batch(es), 3 point(s); 0 batch(es) still waiting"
    assert [r["value"] for r in influxd.query('SELECT "value" FROM "m"', database=influx_db)] == [
        1.0, 2.0, 3.0
    ]  # fmt: skip


def test_flush_with_influxdb_unreachable_keeps_the_batches(tmp_path, monkeypatch, refused_port):
    monkeypatch.setenv("ENERGYMON_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("INFLUXDB_HOSTNAME", "127.0.0.1")
    monkeypatch.setenv("INFLUXDB_PORT", str(refused_port))
    Spool(tmp_path / "spool", 64 * 1024**2, 86400).append(["m value=1 1700000000000"])
    result = run("spool", "flush")
    assert result.exit_code == 1
    assert result.stdout.strip() == "sent 0 batch(es), 0 point(s); 1 batch(es) still waiting"
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert json.loads(run("spool", "status", "--json").stdout)["batches"] == 1


def test_flush_sets_an_unreadable_batch_aside_and_sends_the_rest(
    influxd, influx_db, tmp_path, monkeypatch
):
    # 200 random bytes in a spool file (a disk fault) used to end in a UnicodeDecodeError
    # traceback, and block every later write.
    monkeypatch.setenv("ENERGYMON_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("INFLUXDB_HOSTNAME", influxd.host)
    monkeypatch.setenv("INFLUXDB_PORT", str(influxd.port))
    monkeypatch.setenv("INFLUXDB_DB", influx_db)
    queue = Spool(tmp_path / "spool", 64 * 1024**2, 86400)
    queue.append(["m,id=1 value=1 1700000000000"])
    broken = queue.path / queue.append(["m,id=1 value=2 1700000001000"]).name
    queue.append(["m,id=1 value=3 1700000002000", "m,id=1 value=4 1700000003000"])
    broken.write_bytes(bytes(range(56, 256)))  # 200 bytes, not UTF-8

    flushed = subprocess.run(
        [sys.executable, "-m", "energymon_pipeline.cli", "spool", "flush"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert flushed.returncode == 0, flushed.stderr
    assert flushed.stdout.strip() == "sent 2 batch(es), 3 point(s); 0 batch(es) still waiting"
    [warning] = flushed.stderr.splitlines()
    assert warning.startswith(f"warning: spool {queue.path}: batch {broken.name} cannot be read")
    assert "not UTF-8" in warning and "Traceback" not in flushed.stderr
    assert (queue.path / "rejected" / broken.name).read_bytes() == bytes(range(56, 256))
    values = [r["value"] for r in influxd.query('SELECT "value" FROM "m"', database=influx_db)]
    assert values == [1.0, 3.0, 4.0]
    status = json.loads(run("spool", "status", "--json").stdout)
    assert (status["batches"], status["rejected_batches"]) == (0, 1)


def test_status_and_flush_cover_the_raw_readings_spool(influxd, influx_db, tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYMON_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("INFLUXDB_HOSTNAME", influxd.host)
    monkeypatch.setenv("INFLUXDB_PORT", str(influxd.port))
    monkeypatch.setenv("INFLUXDB_DB", influx_db)
    monkeypatch.setenv("INFLUXDB_RAW_RETENTION", "30d")
    now_ms = int(time.time() * 1000)  # inside the 30-day policy
    Spool(tmp_path / "spool" / "raw", 64 * 1024**2, 86400).append([f"m,id=1 value=7 {now_ms}"])
    Spool(tmp_path / "spool", 64 * 1024**2, 86400).append(
        ["energymon_poll,id=1 ok=true 1700000000000"]
    )
    status = json.loads(run("spool", "status", "--json").stdout)
    assert [(s["path"], s["batches"]) for s in status] == [
        (str(tmp_path / "spool" / "raw"), 1), (str(tmp_path / "spool"), 1)
    ]  # fmt: skip
    flushed = run("spool", "flush")
    assert flushed.stderr == ""
    assert flushed.stdout.strip() == "sent 2 batch(es), 2 point(s); 0 batch(es) still waiting"
    raw = influxd.query('SELECT "value" FROM "energymon_raw"."m"', database=influx_db)
    assert [r["value"] for r in raw] == [7.0]

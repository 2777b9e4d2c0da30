"""`energymon read METER_ID` and `energymon probe` against a real Modbus server: the same code
path as a poll run, printed for a person (or as JSON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from energymon_pipeline.errors import RegistryError
from energymon_pipeline.modbus.decode import encode_value
from energymon_pipeline.modbus.types import DataType, FunctionCode, Order
from energymon_pipeline.registry import db, queries
from virtual_server import DeviceMemory


def point_virtual_meter_at(registry_url: str, port: int) -> None:
    engine = sa.create_engine(registry_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE energy_meters SET host = '127.0.0.1', port = :p WHERE id = 0"),
            {"p": port},
        )
    engine.dispose()


def test_read_the_seeded_virtual_meter(energymon, registry_url, modbus_server):
    assert energymon("db", "upgrade").exit_code == 0
    point_virtual_meter_at(registry_url, modbus_server.port)
    modbus_server.devices[0] = DeviceMemory(holding_registers={0: 0xFF85})  # INT16 -123
    table = energymon("read", "0")
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["MEASUREMENT", "VALUE", "UNIT", "FC", "ADDRESS"]
    assert lines[1].split() == ["test_measurement", "-123", "test_u", "3", "0"]
    assert lines[2].startswith(
        f"-- 127.0.0.1:{modbus_server.port} unit 0: 1 value(s), 1 request(s)"
    )
    result = json.loads(energymon("read", "0", "--json").stdout)
    assert result["ok"] is True and result["requests"] == 1
    assert result["readings"][0]["value"] == -123.0
    assert [(r.unit_id, r.function_code, r.address, r.count) for r in modbus_server.requests] == [
        (0, 3, 0, 1), (0, 3, 0, 1)
    ]  # fmt: skip


def test_read_reports_errors_and_exits_1(energymon, registry_url, refused_port):
    assert energymon("db", "upgrade").exit_code == 0
    point_virtual_meter_at(registry_url, refused_port)
    result = energymon("read", "0")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: meter 0 (127.0.0.1:{refused_port} unit 0): FC3 0 (test_measurement): "
        f"connection refused: 127.0.0.1:{refused_port}\n"
    )
    missing = energymon("read", "42")
    assert missing.exit_code == 1
    assert missing.stderr == "error: meter 42: does not exist\n"


def test_read_keeps_and_uses_the_splits_it_learns(
    energymon, registry_url, modbus_server, monkeypatch
):
    """`read` reads the way a poll does: with the splits the registry remembers, saving
    what it learns (each command is a process of its own)."""
    assert energymon("db", "upgrade").exit_code == 0
    engine = db.create_engine(registry_url)
    queries.insert_registers(
        engine,
        [(i, {"type": "gappy", "register_address": a, "measurement_name": f"g{a}",
              "data_type": 3, "function_code": 4, "word_order": 2, "byte_order": 2})
         for i, a in enumerate([0, 4])],
    )  # fmt: skip
    queries.add_meter(engine, {"id": 3, "host": "127.0.0.1", "port": modbus_server.port,
                               "slave_address": 3, "type": "gappy"})  # fmt: skip
    memory = DeviceMemory()  # registers 2-3 unmapped: a merged read gets exception 2
    for a in (0, 4):
        memory.set_registers(4, a, encode_value(a + 0.5, DataType.FLOAT32))
    modbus_server.devices[3] = memory

    first = json.loads(energymon("read", "3", "--json").stdout)
    second = json.loads(energymon("read", "3", "--json").stdout)
    assert first["ok"] and second["ok"]
    assert [r["value"] for r in second["readings"]] == [0.5, 4.5]
    assert [(r.address, r.count) for r in modbus_server.requests] == [
        (0, 6), (0, 2), (4, 2),  # first: the merged read fails, then each value alone
        (0, 2), (4, 2),  # second: alone from the start
    ]  # fmt: skip
    with engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT address FROM meter_learnt_splits")).all()
    assert sorted(a for (a,) in stored) == [0, 4]

    # A registry that cannot take what a read learnt costs a warning, never the readings.
    def unwritable(*args, **kwargs):
        raise RegistryError("the registry is read-only")

    monkeypatch.setattr("energymon_pipeline.commands.read.save_learnt_splits", unwritable)
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM meter_learnt_splits"))
    third = energymon("read", "3", "--json")
    assert third.exit_code == 0
    assert [r["value"] for r in json.loads(third.stdout)["readings"]] == [0.5, 4.5]
    assert third.stderr == (
        "warning: meter 3: learnt request splits not saved: the registry is read-only\n"
    )
    engine.dispose()


def test_probe_reads_consecutive_values_with_orders(energymon, modbus_server):
    memory = DeviceMemory()
    memory.set_registers(4, 10, encode_value(230.0, DataType.FLOAT32, Order.LITTLE, Order.BIG))
    memory.set_registers(4, 12, encode_value(-1.5, DataType.FLOAT32, Order.LITTLE, Order.BIG))
    modbus_server.devices[7] = memory
    result = energymon(
        "probe", "--host", "127.0.0.1", "--port", str(modbus_server.port), "--unit", "7",
        "--address", "10", "--count", "2", "--function", "4", "--type", "float32",
        "--word-order", "little", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    readings = json.loads(result.stdout)["readings"]
    assert [(r["address"], r["value"]) for r in readings] == [(10, 230.0), (12, -1.5)]
    assert len(modbus_server.requests) == 1


def test_probe_refuses_impossible_ranges(energymon):
    result = energymon("probe", "--host", "127.0.0.1", "--address", "0", "--count", "100",
                       "--type", "FLOAT64")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr == (
        "error: --count 100 of FLOAT64 needs 400 registers; allowed: at most 125 registers in "
        "one request\n"
    )
    bad = energymon("probe", "--host", "127.0.0.1", "--address", "70000")
    assert bad.exit_code == 2
    assert "70000 is not in the range 0<=x<=65535" in bad.stderr


def test_probe_count_limits_and_their_help(energymon, modbus_server):
    """At most 125 registers for functions 3/4 (whatever --type), 2000 bits for 1/2: what
    one Modbus request can carry, and what the help says."""
    help_text = " ".join(energymon("probe", "--help").stdout.split())
    assert "at most 125 registers in all (125 INT16, 62 FLOAT32, 31 FLOAT64)" in help_text
    assert "for functions 1/2 bits, at most 2000" in help_text
    base = ["probe", "--host", "127.0.0.1", "--port", str(modbus_server.port), "--address", "0"]
    for count, data_type, registers in [("126", "INT16", 126), ("63", "FLOAT32", 126)]:
        refused = energymon(*base, "--count", count, "--type", data_type)
        assert refused.exit_code == 1
        assert refused.stderr == (
            f"error: --count {count} of {data_type} needs {registers} registers; allowed: at "
            "most 125 registers in one request\n"
        )
    too_many_bits = energymon(*base, "--count", "2001", "--function", "1")
    assert too_many_bits.exit_code == 2
    assert "2001 is not in the range 1<=x<=2000" in too_many_bits.stderr
    assert modbus_server.requests == []

    memory = DeviceMemory()
    memory.set_registers(3, 0, [7] * 125)
    memory.set_bits(1, 0, [i % 3 == 0 for i in range(2000)])
    modbus_server.devices[1] = memory
    registers = energymon(*base, "--count", "125", "--type", "INT16", "--json")
    assert registers.exit_code == 0, registers.stderr
    assert [r["value"] for r in json.loads(registers.stdout)["readings"]] == [7.0] * 125
    bits = energymon(*base, "--count", "2000", "--function", "1", "--json")
    assert bits.exit_code == 0, bits.stderr
    readings = json.loads(bits.stdout)["readings"]
    assert [r["value"] for r in readings] == [float(i % 3 == 0) for i in range(2000)]
    assert [(r.function_code, r.count) for r in modbus_server.requests] == [(3, 125), (1, 2000)]


def test_probe_labels_coils_and_discrete_inputs(energymon, modbus_server):
    memory = DeviceMemory()
    memory.set_bits(FunctionCode.READ_COILS, 4, [1, 0])
    memory.set_bits(FunctionCode.READ_DISCRETE_INPUTS, 4, [0, 1])
    modbus_server.devices[1] = memory
    labels = {}
    for function in ("1", "2"):
        result = energymon(
            "probe", "--host", "127.0.0.1", "--port", str(modbus_server.port), "--address", "4",
            "--count", "2", "--function", function,
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        labels[function] = [line.split()[:2] for line in result.stdout.splitlines()[1:3]]
    assert labels == {"1": [["coil@4", "1"], ["coil@5", "0"]],
                      "2": [["input@4", "0"], ["input@5", "1"]]}  # fmt: skip


#: What each misbehaving peer (see conftest.py) is reported as, for one INT16 register.
FAULTS = {
    "closes_at_once": "connection closed by the device",
    "closes_after_request": "connection closed by the device: right after accepting the connection",
    "answers_garbage": "malformed response: not a Modbus TCP frame (protocol id ",
    "byte_count_too_large": (
        "malformed response: response byte count 4 does not match the 2 data bytes sent"
    ),
    "byte_count_too_small": (
        "malformed response: response byte count 0 does not match the 2 data bytes sent"
    ),
}


def run_all(commands: list[list[str]], env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """Run the installed `energymon` script once per command, all at once, each bounded."""
    script = os.path.join(os.path.dirname(sys.executable), "energymon")
    running = [
        (command, subprocess.Popen([script, *command], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        for command in commands
    ]  # fmt: skip
    done = []
    try:
        for command, process in running:
            stdout, stderr = process.communicate(timeout=120)
            done.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    finally:
        for _, process in running:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    return done


def test_read_and_probe_name_each_fault_in_one_line(peers, modbus_server, tmp_path):
    """`energymon read` and `probe`, as a user runs them, against each misbehaving peer:
    exit 1, one line on stderr naming the meter or host and the fault, no traceback; with a
    5 s timeout nothing is waited for. The well-behaved meter reads as usual."""
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    env = {**os.environ, "ENERGYMON_DATABASE_URL": url, "ENERGYMON_DATA_DIR": str(tmp_path)}
    engine = db.create_engine(url)
    db.upgrade(engine)
    point_virtual_meter_at(url, modbus_server.port)
    modbus_server.devices[0] = DeviceMemory(holding_registers={0: 0xFF85})  # INT16 -123
    started = {}
    for name in FAULTS:
        peer = peers.start(name)
        meter_id = queries.add_meter(
            engine, {"host": "127.0.0.1", "port": peer.port, "slave_address": 1,
                     "type": "virtual_modbustcp", "timeout_s": 5.0},
        ).ids[0]  # fmt: skip
        started[name] = (peer, meter_id)
    engine.dispose()
    commands = [["read", "0"]]
    for peer, meter_id in started.values():
        commands.append(["read", str(meter_id)])
        commands.append(["probe", "--host", "127.0.0.1", "--port", str(peer.port), "--address",
                         "0", "--type", "INT16", "--timeout", "5"])  # fmt: skip

    began = time.monotonic()
    good, *faulty = run_all(commands, env)
    assert time.monotonic() - began < 60

    assert good.returncode == 0 and good.stderr == "", good.stderr
    assert good.stdout.splitlines()[1].split() == ["test_measurement", "-123", "test_u", "3", "0"]
    for index, (name, (peer, meter_id)) in enumerate(started.items()):
        read, probe = faulty[2 * index], faulty[2 * index + 1]
        where = f"127.0.0.1:{peer.port} unit 1"
        for result, prefix in [
            (read, f"error: meter {meter_id} ({where}): FC3 0 (test_measurement): "),
            (probe, f"error: {where}: FC3 0 (int16@0): "),
        ]:
            assert result.returncode == 1, (name, result.stderr)
            assert result.stderr.count("\n") == 1, (name, result.stderr)
            assert result.stderr.startswith(prefix + FAULTS[name]), (name, result.stderr)
            assert "Traceback" not in result.stderr and "Fatal error" not in result.stderr
            assert "timeout" not in result.stderr
            assert result.stdout.splitlines()[-1].startswith(f"-- {where}: 0 value(s)")


@pytest.mark.parametrize("behaviour", ["byte_count_too_large", "closes_after_request"])
def test_read_json_carries_the_fault(energymon, registry_url, peers, behaviour):
    """--json: the fault is in the output's errors, nothing on stderr."""
    assert energymon("db", "upgrade").exit_code == 0
    peer = peers.start(behaviour)
    engine = sa.create_engine(registry_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE energy_meters SET host = '127.0.0.1', port = :p, slave_address = 1"),
            {"p": peer.port},
        )
    engine.dispose()
    result = energymon("read", "0", "--json")
    assert result.exit_code == 1 and result.stderr == ""
    [error] = json.loads(result.stdout)["errors"]
    assert error == f"FC3 0 (test_measurement): {FAULTS[behaviour]}"

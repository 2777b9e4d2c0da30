"""`energymon read METER_ID` and `energymon probe` against a real Modbus server: the same code
path as a poll run, printed for a person (or as JSON)."""

from __future__ import annotations

import json

import sqlalchemy as sa

from energymon_pipeline.modbus.decode import encode_value
from energymon_pipeline.modbus.types import DataType, Order
from virtual_server.server import DeviceMemory


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
        f"error: FC3 0 (test_measurement): connection refused: 127.0.0.1:{refused_port}\n"
    )
    missing = energymon("read", "42")
    assert missing.exit_code == 1
    assert missing.stderr == "error: meter 42: does not exist\n"


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
    assert (
        result.stderr == "error: --count 100 of FLOAT64 needs 400 registers; allowed: at most 125\n"
    )
    bad = energymon("probe", "--host", "127.0.0.1", "--address", "70000")
    assert bad.exit_code == 2
    assert "70000 is not in the range 0<=x<=65535" in bad.stderr

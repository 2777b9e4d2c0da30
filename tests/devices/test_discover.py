"""`energymon discover` on loopback: the virtual server's SDM630 (its Eastron meter code), its
SunSpec device and a plain test device, a plain pymodbus server ("answers, unknown"), a
gateway that answers exception 11 for absent units, a silent port, a refused port and an RTU
bus on a pseudo-terminal pair. The scan lists exactly the units that answer and what they
are, one request at a time, within its time bounds; --add adds them once."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from click.testing import CliRunner
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice
from rtu_sim import RtuBus

from energymon_pipeline.cli import cli
from energymon_pipeline.commands.discover import parse_units, ranges_text
from energymon_pipeline.devices.identify import UNKNOWN, scan
from energymon_pipeline.devices.sunspec_store import load_layout
from energymon_pipeline.modbus.client import ModbusConnection
from energymon_pipeline.modbus.types import Endpoint
from energymon_pipeline.registry import db, queries
from energymon_pipeline.registry.definitions import load_definitions
from virtual_server import VirtualModbusTCPServer
from virtual_server.devices import RandomTestDevice
from virtual_server.devices.sdm630 import Sdm630
from virtual_server.sunspec import SunSpecInverter


def discover(*args: str):
    """`energymon discover ARGS` in-process (no registry needed without --add)."""
    return CliRunner().invoke(cli, ["discover", *args], catch_exceptions=False)


def mixed_server(**options) -> VirtualModbusTCPServer:
    """SDM630 (meter code 0x0070) at unit 1, SunSpec at 3, a plain test device at 5."""
    devices = {1: Sdm630(seed=1), 3: SunSpecInverter(), 5: RandomTestDevice(seed=5)}
    return VirtualModbusTCPServer(devices, **options)


def test_the_scan_lists_exactly_the_answering_units_and_what_they_are():
    with mixed_server() as server:
        server.reset_requests()
        result = discover("127.0.0.1", "--port", str(server.port), "--units", "1-6",
                          "--timeout", "0.3")  # fmt: skip
        requests = server.requests
        stats = server.stats
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["UNIT", "IDENTIFIED", "AS", "DETAILS"]
    rows = {int(line.split()[0]): line.split(None, 2)[1:] for line in lines[1:]}
    assert sorted(rows) == [1, 3, 5]
    assert rows[1][0] == "sdm630-v2" and "Eastron" in rows[1][1] and "0x0070" in rows[1][1]
    assert rows[3][0] == "sunspec"
    assert "energymon Virtual SunSpec Inverter" in rows[3][1]
    assert "serial VS-0001" in rows[3][1] and "models 1, 103, 160, 203" in rows[3][1]
    assert rows[5][0] == UNKNOWN and rows[5][1].startswith("answers, unknown")
    assert "scanned 6 unit id(s)" in result.stderr
    assert "3 answered (2 identified, 1 unknown)" in result.stderr
    # Reads only, one request at a time; a silent unit was asked exactly once.
    assert {r.function_code for r in requests} <= {3, 4}
    assert stats.max_in_flight == 1
    for silent in (2, 4, 6):
        assert [(r.function_code, r.address) for r in requests if r.unit_id == silent] == [
            (3, 40000)
        ]


def test_json_has_one_object_per_answering_unit():
    with mixed_server() as server:
        result = discover("127.0.0.1", "--port", str(server.port), "--units", "5,3,1,2",
                          "--timeout", "0.3", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert [item["unit"] for item in found] == [5, 3, 1]  # the order asked
    unknown, sunspec, sdm = found
    assert unknown == {"unit": 5, "identified_as": "unknown", "detail": unknown["detail"]}
    assert sunspec["identified_as"] == "sunspec"
    assert sunspec["base_address"] == 40000
    assert sunspec["models"][:2] == [
        {"id": 1, "name": "common", "address": 40002, "length": 66},
        {"id": 103, "name": "inverter_three_phase", "address": 40070, "length": 50},
    ]
    assert [m["id"] for m in sunspec["models"]] == [1, 103, 160, 203]
    assert sunspec["identity"]["Mn"] == "energymon" and sunspec["identity"]["SN"] == "VS-0001"
    assert sdm["identified_as"] == sdm["profile"] == "sdm630-v2"
    assert (sdm["manufacturer"], sdm["value"]) == ("Eastron", 0x0070)
    assert "sdm630" in sdm["also"]


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


def test_a_plain_pymodbus_server_answers_and_is_unknown():
    """pymodbus's own server (not this project's): unit 1 holds registers 0-9 only, so every
    SunSpec and signature read is answered with an exception. Like many devices with their
    own IP address, it answers for every unit id (pymodbus 3.16: exception 4 for the ones it
    does not simulate), and any answer means something is there."""

    async def run():
        port = free_port()
        device = SimDevice(
            id=1, simdata=[SimData(address=0, values=list(range(10)), datatype=SimType.REGISTERS)]
        )
        server = ModbusTcpServer(device, address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        connection = ModbusConnection(Endpoint("127.0.0.1", port, 0, timeout_s=0.3, retries=0))
        try:
            return await asyncio.wait_for(scan(connection, [1, 2, 3], 6.0, 20.0), 30)
        finally:
            connection.close()
            await server.shutdown()

    result = asyncio.run(run())
    assert [(i.unit, i.identified_as) for i in result.found] == [
        (1, UNKNOWN),
        (2, UNKNOWN),
        (3, UNKNOWN),
    ]
    assert result.found[0].detail == (
        "its first read (holding register 40000) got modbus exception 2 (illegal address); "
        "no SunSpec map, no shipped profile's signature"
    )
    assert "got modbus exception 4 (device failure)" in result.found[1].detail
    assert result.scanned == [1, 2, 3] and result.not_scanned == []
    assert result.link_error is None


def test_a_gateway_answering_exception_11_for_absent_units_lists_none_of_them():
    with mixed_server(answer_unknown_units=True) as server:
        started = time.monotonic()
        result = discover("127.0.0.1", "--port", str(server.port), "--units", "1-40",
                          "--timeout", "2", "--json")  # fmt: skip
        elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.stderr
    assert [item["unit"] for item in json.loads(result.stdout)] == [1, 3, 5]
    assert elapsed < 10  # an exception answer costs no timeout


def test_a_silent_port_completes_within_its_bound(silent_port):
    started = time.monotonic()
    result = discover("127.0.0.1", "--port", str(silent_port), "--units", "1-10",
                      "--timeout", "0.2")  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "scanned 10 unit id(s)" in result.stderr and "0 answered" in result.stderr
    assert elapsed < 10 * 0.2 + 2.0  # one timeout per unit, not one per base and signature


def test_a_silent_bus_behind_a_gateway_costs_one_timeout_per_unit():
    with mixed_server(gateway=True, max_connections=1) as server:
        server.reset_requests()
        started = time.monotonic()
        result = discover("127.0.0.1", "--port", str(server.port), "--units", "6-30",
                          "--timeout", "0.1")  # fmt: skip
        elapsed = time.monotonic() - started
        requests = server.requests
    assert result.exit_code == 0, result.stderr
    assert "scanned 25 unit id(s)" in result.stderr and "0 answered" in result.stderr
    assert len(requests) == 25
    assert elapsed < 25 * 0.1 + 3.0


def test_max_time_bounds_the_whole_scan_and_names_the_units_not_reached(silent_port):
    started = time.monotonic()
    result = discover("127.0.0.1", "--port", str(silent_port), "--units", "1-100",
                      "--timeout", "0.5", "--max-time", "2")  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert elapsed < 4.0
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: --max-time 2 s ran out: unit id(s) ")
    assert error.endswith("-100 not scanned (narrow --units, or allow more time)")


def test_a_refused_port_stops_the_scan_at_once(refused_port):
    started = time.monotonic()
    result = discover("127.0.0.1", "--port", str(refused_port), "--units", "1-247")
    assert time.monotonic() - started < 5
    assert result.exit_code == 1
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "connection refused" in error
    assert error.endswith("scan stopped, unit id(s) 1-247 not scanned")


@pytest.mark.parametrize(
    ("units", "why"),
    [
        ("0-248", "'0-248' is out of range"),
        ("300", "'300' is out of range"),
        ("10-2", "'10-2' runs backwards"),
        ("1,x", "'x' is not a unit id or range"),
        ("", "'' is not a unit id or range"),
        ("-1", "'-1' is not a unit id or range"),
    ],
)
def test_bad_units_are_a_one_line_error(units, why):
    result = discover("127.0.0.1", "--units", units)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: --units {units!r}: {why}; allowed: unit ids 0-247 as a comma-separated "
        "list of ids and ranges, e.g. 1-247 or 1,2,10-20\n"
    )


def test_units_lists_and_ranges():
    assert parse_units("0,1-3,2,247") == [0, 1, 2, 3, 247]
    assert parse_units(" 5 - 7 ") == [5, 6, 7]
    assert ranges_text([7, 1, 2, 3, 9, 10]) == "1-3, 7, 9-10"


def test_host_or_serial_is_required():
    assert discover().exit_code == 2
    assert discover("h", "--serial", "/dev/null").exit_code == 2


def test_a_serial_bus_on_a_pty_pair():
    bus = RtuBus(units={2, 5, 6}, silent={6}).start()
    try:
        started = time.monotonic()
        result = discover("--serial", bus.path, "--baudrate", "19200", "--units", "1-7",
                          "--timeout", "0.2", "--json")  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        bus.stop()
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert [(item["unit"], item["identified_as"]) for item in found] == [
        (2, UNKNOWN),
        (5, UNKNOWN),
    ]
    assert bus.bad_crc == 0
    assert [r for r in bus.requests if r[0] in (1, 3, 4, 6, 7)] == [
        (unit, 3, 40000, 4) for unit in (1, 3, 4, 6, 7)
    ]
    assert elapsed < 15


def test_add_adds_each_identified_unit_once(energymon, registry_url):
    assert energymon("db", "upgrade").exit_code == 0
    engine = db.create_engine(registry_url)
    before = {m["id"] for m in queries.list_meters(engine)}
    with mixed_server() as server:
        port = str(server.port)
        first = energymon("discover", "127.0.0.1", "--port", port, "--units", "1-5",
                          "--timeout", "0.3", "--add")  # fmt: skip
        assert first.exit_code == 0, first.stderr
        added = [m for m in queries.list_meters(engine) if m["id"] not in before]
        assert sorted((m["slave_address"], m["type"], m["port"]) for m in added) == [
            (1, "sdm630-v2", server.port),
            (3, "sunspec", server.port),
        ]
        ids = {m["slave_address"]: m["id"] for m in added}
        assert f"added meter {ids[1]}: unit 1 as type 'sdm630-v2'; profile sdm630-v2 " in (
            first.stdout
        )
        assert f"added meter {ids[3]}: unit 3 as type 'sunspec'; SunSpec layout stored" in (
            first.stdout
        )
        assert "unit 5: not added: answers, but was not identified" in first.stderr
        endpoint, device = load_layout(engine, ids[3])
        assert endpoint == f"tcp:127.0.0.1:{server.port}:socket unit 3"
        assert device.model_ids == [1, 103, 160, 203]
        # Both are polled as added: the profile's registers, the stored layout.
        definitions = load_definitions(engine, meter_ids=[ids[1], ids[3]])
        assert [m.meter_id for m in definitions.meters] == sorted(ids.values())
        assert definitions.problems == []

        second = energymon("discover", "127.0.0.1", "--port", port, "--units", "1-5",
                           "--timeout", "0.3", "--add")  # fmt: skip
    assert second.exit_code == 1
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: unit 1: not added: meter {ids[1]} already is 127.0.0.1:{port} unit 1",
        f"error: unit 3: not added: meter {ids[3]} already is 127.0.0.1:{port} unit 3",
    ]
    assert len(queries.list_meters(engine)) == len(before) + 2
    engine.dispose()


def test_add_with_a_type_prefix_imports_the_profile_under_that_type(energymon, registry_url):
    assert energymon("db", "upgrade").exit_code == 0
    engine = db.create_engine(registry_url)
    with mixed_server() as server:
        result = energymon("discover", "127.0.0.1", "--port", str(server.port), "--units", "1",
                           "--timeout", "0.3", "--json", "--add", "--type-prefix", "lab-")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["identified_as"] == "sdm630-v2"  # stdout stays JSON
    [meter] = [m for m in queries.list_meters(engine) if m["slave_address"] == 1
               and m["port"] == server.port]  # fmt: skip
    assert meter["type"] == "lab-sdm630-v2"
    assert queries.list_registers(engine, "lab-sdm630-v2")
    assert not queries.list_registers(engine, "sdm630-v2")
    engine.dispose()


def test_meters_add_type_auto_does_not_warn_about_missing_registers(energymon):
    assert energymon("db", "upgrade").exit_code == 0
    added = energymon("meters", "add", "--host", "127.0.0.1", "--port", "1502", "--unit", "1",
                      "--type", "auto")  # fmt: skip
    assert added.exit_code == 0, added.stderr
    assert added.stderr == ""
    other = energymon("meters", "add", "--host", "127.0.0.1", "--port", "1502", "--unit", "2",
                      "--type", "nothing-here")  # fmt: skip
    assert "type 'nothing-here' has no registers yet" in other.stderr


def test_add_puts_the_meters_in_a_poll_group_and_a_link_stays_in_one(energymon, registry_url):
    assert energymon("db", "upgrade").exit_code == 0
    engine = db.create_engine(registry_url)
    with mixed_server() as server:
        args = ["discover", "127.0.0.1", "--port", str(server.port), "--timeout", "0.3", "--add"]
        grouped = energymon(*args, "--units", "1", "--group", "fast")
        assert grouped.exit_code == 0, grouped.stderr
        [meter] = [m for m in queries.list_meters(engine) if m["port"] == server.port]
        assert meter["poll_group"] == "fast"
        # Another unit of the same link in another group is refused in one line.
        other = energymon(*args, "--units", "3")
    assert other.exit_code == 1
    [error] = other.stderr.splitlines()[-1:]
    assert error.startswith("error: unit 3: not added: meter ")
    assert "a link's meters must be in one poll group" in error
    assert len([m for m in queries.list_meters(engine) if m["port"] == server.port]) == 1
    assert discover("127.0.0.1", "--group", "fast").exit_code == 2  # only with --add
    engine.dispose()


@pytest.fixture
def http_port():
    """A loopback port whose server answers every request with an HTTP error (not Modbus)."""
    import socketserver
    import threading

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            while self.request.recv(256):
                self.request.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_answers_that_are_not_modbus_are_named_not_listed(http_port):
    started = time.monotonic()
    result = discover("127.0.0.1", "--port", str(http_port), "--units", "1-3", "--timeout", "1")
    assert time.monotonic() - started < 3  # a garbled answer costs no timeout
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith(
        "warning: unit id(s) 1-3 answered with something that is not a Modbus answer "
        "(malformed response: not a Modbus TCP frame"
    )
    assert "--framer rtu" in warning


def test_an_auto_meter_whose_answer_is_not_modbus_keeps_its_type(migrated, http_port):
    from energymon_pipeline.devices.identify import identify_and_store
    from energymon_pipeline.registry.definitions import load_meter

    queries.add_meter(migrated, {"id": 7, "host": "127.0.0.1", "port": http_port,
                                 "slave_address": 1, "type": "auto", "timeout_s": 1})  # fmt: skip
    outcome = identify_and_store(migrated, load_meter(migrated, 7))
    assert not outcome.ok
    assert outcome.result == "malformed response"
    assert outcome.message.startswith("unit 1: malformed response: not a Modbus TCP frame")
    assert outcome.message.endswith("the type stays 'auto'")
    assert queries.get_meter(migrated, 7)["type"] == "auto"


def test_a_gateway_at_its_connection_limit_stops_the_scan_and_says_so():
    with mixed_server(gateway=True, max_connections=1) as server:
        holder = socket.create_connection(("127.0.0.1", server.port))  # e.g. a poll's
        try:
            time.sleep(0.1)
            started = time.monotonic()
            result = discover("127.0.0.1", "--port", str(server.port), "--units", "1-20",
                              "--timeout", "0.5")  # fmt: skip
            elapsed = time.monotonic() - started
        finally:
            holder.close()
    assert result.exit_code == 1
    assert elapsed < 5
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "connection closed by the device: right after accepting the connection" in error
    assert error.endswith("scan stopped, unit id(s) 1-20 not scanned")

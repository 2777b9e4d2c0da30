"""The Zeversolar TLC10000 bridge against a real HTTP server on loopback: good pages become
registers; every kind of failure becomes "no value" (a Modbus exception, never 0.0) and one
log line naming the cause. Timeouts are short and every wait is bounded."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from energymon_pipeline.modbus.reader import read_meters_sync
from energymon_pipeline.modbus.types import Endpoint, MeterSpec
from energymon_pipeline.registry.definitions import register_spec
from energymon_pipeline.registry.profiles import profile_rows
from energymon_pipeline.registry.validation import check_register
from virtual_server import NO_VALUE_EXCEPTION, VirtualModbusTCPServer
from virtual_server.adapters.zeversolar import (
    FetchError,
    ZeversolarTLC10000,
    fetch_reading,
    parse_home,
)

_ids = itertools.count(53_000)
TIMEOUT_S = 0.3

# The page as the inverter serves it: line index 10 is the power in W, 11 the energy today.
GOOD_PAGE = "\n".join(
    ["1", "1", "EAB961801234", "ZS1234567890", "M11", "17A31-727R+17829-719R",
     "14:03 21/06/2020", "1", "1", "BS10000A1B2C3", "2345", "17.62", "OK", "Error", ""]
)  # fmt: skip


class Inverter:
    """What the fake inverter answers; tests change `mode` between fetches."""

    def __init__(self) -> None:
        self.mode = "good"
        self.page = GOOD_PAGE
        self.paths: list[str] = []


@pytest.fixture
def inverter():
    state = Inverter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state.paths.append(self.path)
            mode = state.mode
            if mode == "slow":
                time.sleep(TIMEOUT_S * 4)
            if mode == "trickle":
                self.send_response(200)
                self.send_header("Content-Length", str(len(state.page)))
                self.end_headers()
                for char in state.page:
                    self.wfile.write(char.encode())
                    self.wfile.flush()
                    time.sleep(TIMEOUT_S / 4)
                return
            status, body = {
                "good": (200, state.page),
                "slow": (200, state.page),
                "short": (200, "1\n1\nEAB961801234\n"),
                "garbage": (200, GOOD_PAGE.replace("2345", "n/a")),
                "binary": (200, "\x00\xff" * 40),
                "error": (500, "internal error"),
                "missing": (404, "not found"),
                "redirect": (302, ""),
            }[mode]
            self.send_response(status)
            if mode == "redirect":
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            data = body.encode("latin-1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address) -> None:
            pass  # the client gave up on a slow answer: expected here, not worth a traceback

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.port = server.server_address[1]
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}/home.cgi?sid=0"


def test_a_good_page_is_parsed():
    reading = parse_home(GOOD_PAGE)
    assert reading.power_w == 2345 and reading.power_kw == 2.345
    assert reading.energy_today_kwh == 17.62


@pytest.mark.parametrize(
    ("mode", "cause"),
    [
        ("short", "short body: 3 line(s)"),
        ("garbage", "line index 10 is 'n/a', not the power in W"),
        ("binary", "not text"),
        ("error", "HTTP 500"),
        ("missing", "HTTP 404"),
        ("redirect", "HTTP 302"),
        ("slow", f"timed out after {TIMEOUT_S:g} s"),
        ("trickle", f"timed out after {TIMEOUT_S:g} s"),
    ],
)
def test_each_failure_names_its_cause_within_the_timeout(inverter, mode, cause):
    inverter.mode = mode
    started = time.monotonic()
    with pytest.raises(FetchError, match=cause.replace("(", r"\(").replace(")", r"\)")):
        fetch_reading(url(inverter.port), TIMEOUT_S)
    assert time.monotonic() - started < 3 * TIMEOUT_S + 0.5


def test_unreachable_inverter(refused_port):
    with pytest.raises(FetchError, match="unreachable: Connection refused"):
        fetch_reading(url(refused_port), TIMEOUT_S)


def test_bad_values_on_the_right_lines_are_refused():
    lines = GOOD_PAGE.split("\n")
    for index, text, cause in [
        (10, "12.5", "not the power in W"),
        (10, "-5", "below 0"),
        (11, "nan", "not the energy today"),
        (11, "-1.0", "not the energy today"),
        (11, "", "not the energy today"),
    ]:
        page = "\n".join(lines[:index] + [text] + lines[index + 1 :])
        with pytest.raises(FetchError, match=cause):
            parse_home(page)


def meter(port: int) -> MeterSpec:
    specs = []
    for _, row in profile_rows("virtual-tlc10000"):
        clean, problems = check_register(row)
        assert problems == []
        specs.append(register_spec(clean))
    return MeterSpec(
        meter_id=next(_ids),
        endpoint=Endpoint("127.0.0.1", port, 1, timeout_s=2.0, retries=0),
        meter_type="virtual-tlc10000",
        description="roof",
        registers=tuple(specs),
    )


def test_bridge_publishes_the_page_then_a_gap_never_zero(inverter, caplog):
    caplog.set_level(logging.INFO, logger="virtual_server.adapters.zeversolar")
    device = ZeversolarTLC10000("127.0.0.1", inverter.port, timeout_s=TIMEOUT_S)
    with VirtualModbusTCPServer({1: device}) as server:
        assert inverter.paths == ["/home.cgi?sid=0"]  # fetched before the server listened
        (result,) = read_meters_sync([meter(server.port)])
        assert result.errors == []
        assert {r.register.measurement: r.value for r in result.readings} == {
            "power": pytest.approx(2.345, rel=1e-7),
            "energyToday": pytest.approx(17.62, rel=1e-7),
        }

        for mode, cause in [("error", "HTTP 500"), ("short", "short body")]:
            inverter.mode = mode
            caplog.clear()
            server.set_datastore()  # one update tick
            lines = [r.getMessage() for r in caplog.records]
            assert len(lines) == 1 and cause in lines[0] and device.url in lines[0]
            assert server.devices[1].without_value(4) == dict.fromkeys(range(4), NO_VALUE_EXCEPTION)
            (result,) = read_meters_sync([meter(server.port)])
            assert result.readings == []  # a gap: no 0.0 anywhere
            assert result.failed_values == 2
            assert "modbus exception 11 (gateway no response)" in result.error

        inverter.mode = "good"
        inverter.page = GOOD_PAGE.replace("2345", "0").replace("17.62", "31.5")
        caplog.clear()
        server.set_datastore()
        assert "values again after: short body" in caplog.records[0].getMessage()
        (result,) = read_meters_sync([meter(server.port)])
        assert [r.value for r in result.readings] == [0.0, 31.5]  # a real 0 W is published


def test_bridge_start_does_not_wait_long_for_a_dead_inverter(refused_port):
    device = ZeversolarTLC10000("127.0.0.1", refused_port, timeout_s=TIMEOUT_S)
    started = time.monotonic()
    with VirtualModbusTCPServer({1: device}) as server:
        assert time.monotonic() - started < 2.0
        (result,) = read_meters_sync([meter(server.port)])
    assert result.readings == [] and "modbus exception 11" in result.error
    assert device.last_error.startswith("unreachable")


def test_proxy_variables_do_not_capture_requests_to_the_inverter(inverter, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert fetch_reading(url(inverter.port), TIMEOUT_S).power_w == 2345

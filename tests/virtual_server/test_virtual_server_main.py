"""`python -m virtual_server`: options from flags and environment, one-line errors naming
the flag or variable, and the real process serving until SIGTERM."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from pymodbus.client import ModbusTcpClient

from energymon_pipeline.errors import SettingsError
from energymon_pipeline.modbus.reader import read_meters_sync
from energymon_pipeline.modbus.types import Endpoint, MeterSpec, RegisterSpec
from virtual_server import VirtualModbusTCPServer
from virtual_server.__main__ import main
from virtual_server.devices import RandomTestDevice, Sdm630
from virtual_server.options import DeviceSpec, build_servers, parse_device_specs
from virtual_server.schedule import UpdateSchedule

PROJECT = Path(__file__).resolve().parents[2]
_ids = itertools.count(54_000)


def test_device_entries_are_parsed():
    assert parse_device_specs(["sdm630@1", "TEST", " test@7 "], "--device") == [
        DeviceSpec("sdm630", 1),
        DeviceSpec("test", None),
        DeviceSpec("test", 7),
    ]


@pytest.mark.parametrize(
    ("entries", "source", "message"),
    [
        (["meter9"], "--device", "--device 'meter9' names the unknown device 'meter9'; allowed: "
         "NAME or NAME@UNIT with NAME one of test, sdm630, tlc10000, sunspec and UNIT a unit id 0-255"),
        (["sdm630@300"], "VIRTUAL_SERVER_DEVICES",
         "VIRTUAL_SERVER_DEVICES entry 'sdm630@300' has the unit id 300, outside 0-255"),
        (["sdm630@"], "--device", "--device 'sdm630@' is not a device entry"),
        (["test", "sdm630"], "--device", "test and sdm630 both claim every unit id"),
        (["test@1", "sdm630@1"], "--device", "unit id 1 is given to two devices"),
    ],
)  # fmt: skip
def test_bad_device_entries_are_one_line_errors(entries, source, message):
    with pytest.raises(SettingsError) as caught:
        parse_device_specs(entries, source)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_explicit_units_and_one_device_for_every_other_unit():
    plan = build_servers(
        [DeviceSpec("sdm630", 1), DeviceSpec("test")], host="127.0.0.1", port=0, schedule=None
    )
    (server,) = plan.servers
    assert isinstance(server.simulated[1], Sdm630)
    others = {id(server.simulated[u]) for u in range(256) if u != 1}
    assert len(others) == 1 and isinstance(server.simulated[0], RandomTestDevice)
    assert plan.descriptions == ["sdm630 at unit id 1; test at every other unit id"]


def test_fleet_plan_and_its_refusals():
    plan = build_servers(
        [DeviceSpec("sdm630")], host="127.0.0.1", port=0, schedule=None, fleet_size=5,
        units_per_port=2,
    )  # fmt: skip
    assert [sorted(s.simulated) for s in plan.servers] == [[1, 2], [1, 2], [1]]
    assert plan.descriptions[0] == "2 x sdm630 at unit ids 1-2"
    with pytest.raises(SettingsError, match="a fleet simulates one kind of device"):
        build_servers([DeviceSpec("sdm630", 1)], host="h", port=0, schedule=None, fleet_size=3)
    with pytest.raises(SettingsError, match="fleet: 3 devices at 1 per port need ports"):
        build_servers(
            [DeviceSpec("sdm630")], host="h", port=65534, schedule=None, fleet_size=3,
            units_per_port=1,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--device", "nope"], {}, "error: --device 'nope' names the unknown device 'nope'"),
        ([], {"VIRTUAL_SERVER_DEVICES": "sdm630@1,nope"},
         "error: VIRTUAL_SERVER_DEVICES entry 'nope' names the unknown device"),
        (["--device", "tlc10000"], {}, "error: VIRTUAL_TLC10000_INVERTER_HOST is not set"),
        ([], {"VIRTUAL_SERVER_UPDATE_CRON_MINUTE_TRIGGER": "*/90"},
         "error: VIRTUAL_SERVER_UPDATE_CRON_MINUTE_TRIGGER='*/90' has the step 90"),
    ],
)  # fmt: skip
def test_configuration_errors_exit_1_with_one_line(args, env, message, monkeypatch):
    for name in list(os.environ):
        if name.startswith(("VIRTUAL_", "TZ")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.stderr.startswith(message), result.stderr
    assert result.stderr.count("\n") == 1


def test_the_process_serves_until_sigterm(refused_port):
    port = refused_port
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_")},
        "VIRTUAL_SERVER_UPDATE_CRON_SECOND_TRIGGER": "*",
        "TZ": "UTC",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "virtual_server", "--device", "sdm630@3", "--device", "test",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        meter = MeterSpec(
            next(_ids), Endpoint("127.0.0.1", port, 3, timeout_s=0.5, retries=0), "sdm630",
            None, (RegisterSpec("voltageL1", 0),),
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            (result,) = read_meters_sync([meter])
            if not result.errors:
                break
            assert process.poll() is None, process.communicate(timeout=5)
            assert time.monotonic() < deadline, f"not serving after 15 s: {result.error}"
            time.sleep(0.1)
        assert 200 < result.readings[0].value < 260
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr
    assert f"listening on 127.0.0.1:{port} (sdm630 at unit id 3; test at every other" in stderr
    assert "updates at hour * minute */1 second * (UTC)" in stderr


def test_from_environment_reads_the_variables_and_keywords_win():
    env = {
        "VIRTUAL_SERVER_HOST": "127.0.0.1",
        "VIRTUAL_SERVER_PORT": "1502",
        "VIRTUAL_SERVER_RESPONSE_DELAY_MS": "5",
        "VIRTUAL_SERVER_UPDATE_CRON_SECOND_TRIGGER": "*/15",
        "TZ": "Europe/Warsaw",
    }
    server = VirtualModbusTCPServer.from_environment(env, devices=Sdm630(), port=0)
    assert (server.host, server.port, server.response_delay_ms) == ("127.0.0.1", 0, 5.0)
    assert server.schedule == UpdateSchedule("*", "*/1", "*/15", "Europe/Warsaw")
    with server:
        assert server.port != 0 and server.updates == 1


def test_schedule_fires_at_local_wall_clock_times_with_seconds():
    winter_noon_utc = 1700049600.0  # 2023-11-15 12:00:00 UTC = 13:00 in Warsaw
    at_one_am = UpdateSchedule(hour="1", minute="0", second="0", timezone="Europe/Warsaw")
    assert at_one_am.next_after(winter_noon_utc) == 1700092800.0  # 2023-11-16 00:00 UTC
    every_ten = UpdateSchedule(hour="*", minute="*", second="*/10")
    assert every_ten.next_after(winter_noon_utc) == winter_noon_utc + 10
    assert every_ten.next_after(winter_noon_utc + 3.5) == winter_noon_utc + 10
    with pytest.raises(SettingsError, match="update schedule minute='60' selects 60"):
        UpdateSchedule(minute="60")


def _status(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_a_gateway_process_reports_its_counts_in_the_status_file_and_log(tmp_path):
    """What a benchmark running the fleet in its own process reads: the status file while it
    runs (where the gateways listen, their counts) and at exit, and one log line per port."""
    status_file = tmp_path / "status.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_")}
    env |= {"VIRTUAL_SERVER_GATEWAY": "true", "VIRTUAL_SERVER_MAX_CONNECTIONS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "virtual_server", "--device", "sdm630", "--fleet", "3",
         "--units-per-port", "3", "--response-delay-ms", "10", "--host", "127.0.0.1",
         "--port", "0", "--status-file", str(status_file)],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while (status := _status(status_file)) is None:
            assert process.poll() is None, process.communicate(timeout=5)
            assert time.monotonic() < deadline, "no status file after 15 s"
            time.sleep(0.05)
        assert status["running"] is True
        (gateway,) = status["servers"]
        assert (gateway["gateway"], gateway["max_connections"]) == (True, 1)
        client = ModbusTcpClient("127.0.0.1", port=gateway["port"], timeout=2, retries=0)
        try:
            assert client.connect()
            for unit in (1, 2, 3):
                assert not client.read_input_registers(0, count=2, device_id=unit).isError()
            with socket.create_connection(("127.0.0.1", gateway["port"]), timeout=5) as extra:
                extra.settimeout(5)
                with contextlib.suppress(ConnectionResetError):
                    assert extra.recv(16) == b""
        finally:
            client.close()
        wanted = {"requests_served": 3, "connections_accepted": 1, "connections_refused": 1,
                  "max_in_flight": 1}  # fmt: skip
        deadline = time.monotonic() + 5
        while (status := _status(status_file)) is None or status["totals"] != wanted:
            assert time.monotonic() < deadline, f"status not updated: {status}"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr
    final = _status(status_file)
    assert final is not None and final["running"] is False and final["totals"] == wanted
    port = gateway["port"]
    (listening,) = [line for line in stderr.splitlines() if "listening on" in line]
    assert f"listening on 127.0.0.1:{port} (3 x sdm630 at unit ids 1-3); updates at" in listening
    assert listening.endswith("; a gateway: one request at a time, at most 1 connection(s)")
    assert (
        f"127.0.0.1:{port} served 3 requests, accepted 1 connections, refused 1, "
        "at most 1 requests in flight"
    ) in stderr


def test_gateway_flags_and_variables_reach_every_port():
    plan = build_servers(
        [DeviceSpec("sdm630")], host="127.0.0.1", port=0, schedule=None, fleet_size=4,
        units_per_port=2, gateway=True, max_connections=3,
    )  # fmt: skip
    assert [(s.gateway, s.max_connections) for s in plan.servers] == [(True, 3), (True, 3)]
    server = VirtualModbusTCPServer.from_environment(
        {"VIRTUAL_SERVER_GATEWAY": "yes", "VIRTUAL_SERVER_MAX_CONNECTIONS": "2"}, port=0
    )
    assert (server.gateway, server.max_connections) == (True, 2)
    assert not VirtualModbusTCPServer.from_environment({}, port=0).gateway


def test_an_unwritable_status_file_is_a_one_line_error(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("VIRTUAL_"):
            monkeypatch.delenv(name)
    target = tmp_path / "missing-dir" / "status.json"
    result = CliRunner().invoke(
        main, ["--host", "127.0.0.1", "--port", "0", "--status-file", str(target)]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert f"error: cannot write the status file {target}: No such file or directory" in (
        result.stderr
    )

"""`energymon meters add --serial`, `meters link` and the LINK column of `meters list`."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def ready(energymon):
    assert energymon("db", "upgrade").exit_code == 0
    return energymon


def test_add_a_serial_meter_and_list_it(ready):
    added = ready(
        "meters", "add", "--serial", "/dev/ttyUSB0", "--baudrate", "9600", "--parity", "E",
        "--stopbits", "1", "--unit", "5", "--type", "virtual_modbustcp",
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr
    [meter] = [m for m in json.loads(ready("meters", "list", "--json").stdout) if m["id"] == 1]
    assert (meter["serial_port"], meter["baudrate"], meter["parity"], meter["stopbits"]) == (
        "/dev/ttyUSB0", 9600, "E", 1,
    )  # fmt: skip
    assert (meter["host"], meter["port"], meter["framer"]) == ("/dev/ttyUSB0", 0, "rtu")
    table = ready("meters", "list").stdout
    assert "9600 8E1; 1 conn, 0 ms gap, 0 s pause" in table


def test_serial_and_host_options_do_not_mix(ready):
    both = ready("meters", "add", "--serial", "/dev/ttyUSB0", "--host", "gw", "--unit", "1",
                 "--type", "virtual_modbustcp")  # fmt: skip
    assert both.exit_code == 2 and "--serial replaces --host and --port" in both.stderr
    stray = ready("meters", "add", "--host", "gw", "--port", "502", "--baudrate", "9600",
                  "--unit", "1", "--type", "virtual_modbustcp")  # fmt: skip
    assert stray.exit_code == 2 and "--baudrate only apply with --serial" in stray.stderr
    neither = ready("meters", "add", "--unit", "1", "--type", "virtual_modbustcp")
    assert neither.exit_code == 2 and "give --host and --port" in neither.stderr


def test_meters_link_sets_the_whole_link(ready):
    for unit in (1, 2):
        assert ready("meters", "add", "--host", "gw", "--port", "502", "--unit", str(unit),
                     "--type", "virtual_modbustcp").exit_code == 0  # fmt: skip
    result = ready("meters", "link", "2", "--max-connections", "2",
                   "--inter-request-delay-ms", "40", "--connect-delay-s", "0.5")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == ("link gw:502 (meters 1, 2): 2 conn, 40 ms gap, 0.5 s pause")
    shown = ready("meters", "link", "1")
    assert shown.stdout.strip() == result.stdout.strip()
    bad = ready("meters", "link", "1", "--max-connections", "0")
    assert bad.exit_code == 1 and "max_connections 0 is not allowed" in bad.stderr


def test_list_shows_the_settings_the_poll_uses_for_the_link(ready):
    for unit in (1, 2):
        assert ready("meters", "add", "--host", "gw", "--port", "502", "--unit", str(unit),
                     "--type", "virtual_modbustcp").exit_code == 0  # fmt: skip
    assert ready("meters", "link", "1", "--max-connections", "2").exit_code == 0
    # Added later without link options: the link's settings still hold for it.
    assert ready("meters", "add", "--host", "gw", "--port", "502", "--unit", "3",
                 "--type", "virtual_modbustcp").exit_code == 0  # fmt: skip
    lines = [line for line in ready("meters", "list").stdout.splitlines() if " gw " in line]
    assert len(lines) == 3
    assert all("2 conn, 0 ms gap, 0 s pause" in line for line in lines)

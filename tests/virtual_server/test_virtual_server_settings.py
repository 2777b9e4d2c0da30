"""The virtual server's environment variables (virtual_server/settings.py): defaults, where
the pipeline's VIRTUAL_SERVER_HOST/PORT come in, and one-line errors naming the variable."""

from __future__ import annotations

import pytest

from energymon_pipeline.errors import SettingsError
from virtual_server.schedule import UpdateSchedule
from virtual_server.settings import (
    InverterSettings,
    RunSettings,
    run_settings,
    tlc10000_inverter,
)


def test_environment_defaults_and_overrides():
    run = run_settings({})
    assert run == RunSettings(
        listen_host="localhost", port=5020, devices=("test",), fleet_size=0,
        units_per_port=247, response_delay_ms=0.0,
    )  # fmt: skip
    run = run_settings(
        {
            "VIRTUAL_SERVER_HOST": "vs.lan",
            "VIRTUAL_SERVER_PORT": "1502",
            "VIRTUAL_SERVER_DEVICES": "sdm630@1, test",
            "VIRTUAL_SERVER_FLEET_SIZE": "10",
            "VIRTUAL_SERVER_FLEET_UNITS_PER_PORT": "5",
            "VIRTUAL_SERVER_RESPONSE_DELAY_MS": "12.5",
        }
    )
    assert (run.listen_host, run.port, run.devices) == ("vs.lan", 1502, ("sdm630@1", "test"))
    assert (run.fleet_size, run.units_per_port, run.response_delay_ms) == (10, 5, 12.5)
    assert (run.gateway, run.max_connections, run.status_file) == (False, 0, None)
    gateway = run_settings(
        {
            "VIRTUAL_SERVER_GATEWAY": "True",
            "VIRTUAL_SERVER_MAX_CONNECTIONS": "1",
            "VIRTUAL_SERVER_STATUS_FILE": " /tmp/vs.json ",
        }
    )
    assert (gateway.gateway, gateway.max_connections, gateway.status_file) == (
        True, 1, "/tmp/vs.json",
    )  # fmt: skip
    assert run_settings({"VIRTUAL_SERVER_GATEWAY": "off"}).gateway is False
    listen = run_settings({"VIRTUAL_SERVER_LISTEN_HOST": "0.0.0.0"})
    assert listen.listen_host == "0.0.0.0"
    schedule = UpdateSchedule.from_environment({})
    assert (schedule.hour, schedule.minute, schedule.second) == ("*", "*/1", "50")
    assert tlc10000_inverter({}) == InverterSettings(None, 80)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VIRTUAL_SERVER_RESPONSE_DELAY_MS": "fast"},
         "VIRTUAL_SERVER_RESPONSE_DELAY_MS='fast' is not allowed; allowed: a number from 0 to 60000"),
        ({"VIRTUAL_SERVER_GATEWAY": "maybe"},
         "VIRTUAL_SERVER_GATEWAY='maybe' is not a boolean; allowed: true or false"),
        ({"VIRTUAL_SERVER_MAX_CONNECTIONS": "-1"},
         "VIRTUAL_SERVER_MAX_CONNECTIONS=-1 is out of range; allowed: 0 to 10000"),
        ({"VIRTUAL_SERVER_FLEET_UNITS_PER_PORT": "300"},
         "VIRTUAL_SERVER_FLEET_UNITS_PER_PORT=300 is out of range; allowed: 1 to 247"),
        ({"VIRTUAL_SERVER_UPDATE_CRON_SECOND_TRIGGER": "61"},
         "VIRTUAL_SERVER_UPDATE_CRON_SECOND_TRIGGER='61' selects 61, outside 0-59"),
        ({"VIRTUAL_TLC10000_INVERTER_HOST": "http://inverter/"},
         "VIRTUAL_TLC10000_INVERTER_HOST='http://inverter/' is not a host"),
        ({"VIRTUAL_TLC10000_INVERTER_PORT": "0"},
         "VIRTUAL_TLC10000_INVERTER_PORT=0 is out of range; allowed: 1 to 65535"),
    ],
)  # fmt: skip
def test_bad_environment_values_are_named(env, message):
    with pytest.raises(SettingsError) as caught:
        run_settings(env)
        UpdateSchedule.from_environment(env)
        tlc10000_inverter(env)
    assert message in str(caught.value)

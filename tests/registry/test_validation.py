"""The registry's edge: a meter row's request-planning overrides are judged here, once, with
messages that say what is allowed; and a poll group's name follows one rule, in the registry
and in ENERGYMON_POLL_GROUPS."""

from __future__ import annotations

import pytest

from energymon_pipeline import settings
from energymon_pipeline.errors import SettingsError
from energymon_pipeline.registry.validation import check_meter, is_poll_group

METER = {"host": "meter.local", "port": 502, "slave_address": 1, "type": "sdm630"}


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("max_gap", -1, "max_gap -1 is not allowed; allowed: 0 or more (unread addresses a read may span)"),
        ("max_gap", 1.5, "max_gap 1.5 is not a whole number; allowed: 0 or more"),
        ("max_registers_per_request", 0, "max_registers_per_request 0 is not allowed; allowed: 1-125 (the Modbus limit for one read)"),
        ("max_registers_per_request", 126, "max_registers_per_request 126 is not allowed; allowed: 1-125"),
        ("single_register_reads", "maybe", "single_register_reads 'maybe' is not allowed; allowed: 1 or 0 (true or false)"),
    ],
)  # fmt: skip
def test_plan_overrides_out_of_range_are_named(column, value, message):
    _, problems = check_meter({**METER, column: value})
    assert len(problems) == 1 and problems[0][0] == column
    assert problems[0][1].startswith(message)


def test_plan_overrides_in_range_pass_and_absent_ones_stay_absent():
    clean, problems = check_meter(
        {**METER, "max_gap": 0, "max_registers_per_request": 125, "single_register_reads": True}
    )
    assert problems == []
    assert (clean["max_gap"], clean["max_registers_per_request"]) == (0, 125)
    assert clean["single_register_reads"] is True
    clean, problems = check_meter({**METER, "max_gap": None})
    assert problems == [] and not {"max_gap", "single_register_reads"} & clean.keys()


@pytest.mark.parametrize(
    ("name", "allowed"),
    [("north", True), ("x" * 32, True), ("hall_2-b", True),
     ("north pole", False), ("x" * 33, False), ("pół", False), ("a.b", False)],
)  # fmt: skip
def test_one_rule_for_poll_group_names(name, allowed):
    assert is_poll_group(name) is allowed
    _, problems = check_meter({**METER, "poll_group": name})
    assert (problems == []) is allowed
    if allowed:
        assert settings.pipeline({"ENERGYMON_POLL_GROUPS": name}).poll_groups == (name,)
    else:
        with pytest.raises(SettingsError, match="allowed: a comma-separated list of names of"):
            settings.pipeline({"ENERGYMON_POLL_GROUPS": name})

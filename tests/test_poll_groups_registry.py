"""A link's meters are in one poll group: the registry refuses a meter added or moved into a
group other than its link's (one line naming the meters and groups); `energymon meters group`
moves a meter or a whole link; `meters list` shows each meter's group. A link split across
groups anyway (an old database, a SQL client) is named by `db upgrade` and polled by exactly
one group, that of its lowest meter id, with all its meters."""

from __future__ import annotations

import json

import pytest

from energymon_pipeline.registry import queries
from energymon_pipeline.registry.definitions import load_definitions

REGISTERS = [(1, {"type": "gw", "register_address": 0, "measurement_name": "v", "data_unit": "V",
                  "data_type": 4, "function_code": 3, "word_order": 2, "byte_order": 2})]  # fmt: skip


@pytest.fixture
def ready(energymon):
    assert energymon("db", "upgrade").exit_code == 0
    return energymon


def add(run, unit: int, *extra: str, host: str = "gw-a"):
    return run("meters", "add", "--host", host, "--port", "502", "--unit", str(unit),
               "--type", "virtual_modbustcp", *extra)  # fmt: skip


def test_a_meter_joining_a_link_of_another_group_is_refused(ready):
    assert add(ready, 1, "--group", "north").exit_code == 0
    assert add(ready, 2, "--group", "north").exit_code == 0
    refused = add(ready, 3, "--group", "south")
    assert refused.exit_code == 1
    [line] = refused.stderr.strip().splitlines()
    assert line == (
        "error: meter 3 not added: its link tcp:gw-a:502:socket is polled by group(s) 'north' "
        "(group 'north': meter(s) 1, 2), and a link's meters must be in one poll group (two runs "
        "must not talk to one gateway); allowed: group 'north' for meter 3, or move the whole "
        "link with `energymon meters group ID GROUP --whole-link`"
    )
    # No group is a group too (`default`); the same gateway's other port is another link.
    assert add(ready, 3).exit_code == 1
    assert add(ready, 3, "--group", "north").exit_code == 0
    assert add(ready, 4, "--group", "south", host="gw-b").exit_code == 0
    ids = [m["id"] for m in json.loads(ready("meters", "list", "--json").stdout)]
    assert ids == [0, 1, 2, 3, 4]


def test_moving_a_meter_or_its_whole_link(ready):
    for unit in (1, 2):
        assert add(ready, unit, "--group", "north").exit_code == 0
    one = ready("meters", "group", "1", "south")
    assert one.exit_code == 1 and "meter 1 not moved: its link tcp:gw-a:502:socket" in one.stderr
    moved = ready("meters", "group", "1", "south", "--whole-link")
    assert moved.exit_code == 0, moved.stderr
    assert moved.stdout.strip() == "meter(s) 1, 2 now in poll group 'south'"
    table = ready("meters", "list").stdout.splitlines()
    at = table[0].index("GROUP")  # the column's text starts under its header
    groups = {line.split()[0]: line[at:].split()[0] for line in table[1:] if line[:1].isdigit()}
    assert groups["1"] == groups["2"] == "south"
    assert groups["0"] == "default"  # the seeded virtual meter has none
    back = ready("meters", "group", "2", "default", "--whole-link")
    assert back.exit_code == 0
    assert {m["id"]: m["poll_group"] for m in json.loads(ready("meters", "list", "--json").stdout)
            if m["id"] in (1, 2)} == {1: None, 2: None}  # fmt: skip
    bad = ready("meters", "group", "1", "north pole")
    assert bad.exit_code == 1 and "poll_group 'north pole' is not allowed" in bad.stderr
    missing = ready("meters", "group", "99", "north")
    assert missing.exit_code == 1 and "meter 99 does not exist" in missing.stderr


def split_registry(engine) -> None:
    """Meters 1-3 on gateway A in groups north, south, north (written past the refusal, as a
    SQL client would); meter 4 alone on gateway B in south."""
    queries.insert_registers(engine, REGISTERS)
    for meter_id, host, group in ((1, "gw-a", "north"), (2, "gw-a", "north"),
                                  (3, "gw-a", "north"), (4, "gw-b", "south")):  # fmt: skip
        queries.add_meter(engine, {"id": meter_id, "host": host, "port": 502,
                                   "slave_address": meter_id, "type": "gw", "poll_group": group})  # fmt: skip
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE energy_meters SET poll_group = 'south' WHERE id = 2")
        connection.exec_driver_sql("UPDATE energy_meters SET enabled = false WHERE id = 0")


def test_a_split_link_is_polled_by_one_group_with_all_its_meters(migrated):
    split_registry(migrated)
    north = load_definitions(migrated, group="north")
    south = load_definitions(migrated, group="south")
    assert [m.meter_id for m in north.meters] == [1, 2, 3]
    assert [m.meter_id for m in south.meters] == [4]
    assert south.problems == [
        "meter 2: skipped: its link tcp:gw-a:502:socket is polled by group 'north' (group "
        "'north': meter(s) 1, 3; group 'south': meter(s) 2); give the link one group with "
        "`energymon meters group ID GROUP --whole-link`"
    ]
    assert north.problems == [
        "meter 2 (group 'south'): read by group 'north', which polls its link "
        "tcp:gw-a:502:socket (group 'north': meter(s) 1, 3; group 'south': meter(s) 2)"
    ]
    # Without groups (one schedule for every meter) nothing changes; the problem is named.
    assert [m.meter_id for m in load_definitions(migrated).meters] == [1, 2, 3, 4]
    assert queries.split_link_problems(queries.list_meters(migrated)) == [
        "link tcp:gw-a:502:socket has meters in more than one poll group (group 'north': "
        "meter(s) 1, 3; group 'south': meter(s) 2); it is polled by group 'north' (its lowest "
        "meter id's) with all its meters, the other groups leave them out; give them one group "
        "with `energymon meters group ID GROUP --whole-link`"
    ]


def test_db_upgrade_names_a_split_link_and_goes_on(ready, registry):
    split_registry(registry)
    result = ready("db", "upgrade")
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if "more than one poll group" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: link tcp:gw-a:502:socket")
    moved = ready("meters", "group", "2", "north", "--whole-link")
    assert moved.exit_code == 0
    assert "more than one poll group" not in ready("db", "upgrade").stderr

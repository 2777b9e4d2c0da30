"""Link and serial settings in the registry (migration 0005): original rows stay valid with
the defaults, serial meters are stored and loaded with their line, a link's settings are set
on all of its meters at once, and bad values are refused naming the column. On SQLite and the
real PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from energymon_pipeline.errors import RegistryError
from energymon_pipeline.modbus.links import group_links
from energymon_pipeline.modbus.types import SerialLine
from energymon_pipeline.registry import queries
from energymon_pipeline.registry.definitions import load_definitions

METER = {"slave_address": 1, "type": "virtual_modbustcp"}


def by_id(definitions):
    return {m.meter_id: m for m in definitions.meters}


def test_original_rows_are_tcp_meters_with_default_link_settings(migrated):
    with migrated.begin() as connection:
        # Only the original's columns, as its users inserted them with psql.
        connection.execute(
            sa.text(
                "INSERT INTO energy_meters (id, host, port, slave_address, type, description) "
                "VALUES (7, '10.0.0.9', 502, 4, 'virtual_modbustcp', 'old row')"
            )
        )
    definitions = load_definitions(migrated)
    assert definitions.problems == []
    meter = by_id(definitions)[7]
    assert meter.endpoint.serial is None
    assert meter.endpoint.max_connections is None
    assert meter.endpoint.inter_request_delay_s == 0.0
    assert meter.endpoint.link_key == "tcp:10.0.0.9:502:socket"
    [link, _virtual] = sorted(group_links(definitions.meters), key=lambda link: link.key)
    assert link.endpoint.max_connections == 1 and link.connections == 1


def test_serial_meter_round_trip(migrated):
    queries.add_meter(
        migrated,
        {**METER, "host": "/dev/ttyUSB0", "port": 0, "serial_port": "/dev/ttyUSB0",
         "baudrate": 19200, "parity": "e", "stopbits": 2, "id": 3},
    )  # fmt: skip
    meter = by_id(load_definitions(migrated))[3]
    assert meter.endpoint.serial == SerialLine("/dev/ttyUSB0", 19200, "E", 2, 8)
    assert meter.endpoint.link_key == "serial:/dev/ttyUSB0"
    assert str(meter.endpoint) == "/dev/ttyUSB0 unit 1"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"serial_port": "ttyUSB0"}, "serial_port 'ttyUSB0' is not allowed"),
        ({"serial_port": "/dev/ttyUSB0", "parity": "X"}, "parity 'X' is not allowed"),
        ({"serial_port": "/dev/ttyUSB0", "stopbits": 3}, "stopbits 3 is not allowed"),
        ({"serial_port": "/dev/ttyUSB0", "baudrate": 0}, "baudrate 0 is not allowed"),
        ({"max_connections": 0}, "max_connections 0 is not allowed"),
        ({"inter_request_delay_ms": -1}, "inter_request_delay_ms -1 is not allowed"),
    ],
)
def test_bad_link_and_serial_values_are_refused(migrated, values, message):
    fields = {**METER, "host": "/dev/ttyUSB0" if "serial_port" in values else "gw", "port": 0
              if "serial_port" in values else 502, **values}  # fmt: skip
    with pytest.raises(RegistryError, match=message):
        queries.add_meter(migrated, fields)


def test_set_link_sets_every_meter_of_the_link(migrated):
    for meter_id, unit in ((1, 1), (2, 2), (3, 3)):
        queries.add_meter(migrated, {**METER, "host": "GW.local", "port": 502,
                                     "slave_address": unit, "id": meter_id})  # fmt: skip
    queries.add_meter(migrated, {**METER, "host": "gw.local", "port": 503, "id": 4})
    ids = queries.set_link(migrated, 2, {"max_connections": 2, "inter_request_delay_ms": 50})
    assert ids == [1, 2, 3]
    meters = by_id(load_definitions(migrated))
    for meter_id in (1, 2, 3):
        assert meters[meter_id].endpoint.max_connections == 2
        assert meters[meter_id].endpoint.inter_request_delay_s == 0.05
    assert meters[4].endpoint.max_connections is None
    with pytest.raises(RegistryError, match="max_connections 99 is not allowed"):
        queries.set_link(migrated, 1, {"max_connections": 99})

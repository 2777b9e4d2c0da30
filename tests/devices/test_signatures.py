"""Identifying a device by a shipped profile's signature, against the virtual server on
loopback: the SDM630 simulator with Eastron's meter code is recognised, the same device with
another code (or none) and other devices are not; one request at a time, reads only, and the
whole search ends within its time bound even when the peer never answers."""

from __future__ import annotations

import asyncio
import time

from energymon_pipeline.devices.signatures import ProfileMatch, match_profile
from energymon_pipeline.modbus.client import ModbusConnection
from energymon_pipeline.modbus.types import DataType, Endpoint, FunctionCode
from energymon_pipeline.registry.profiles import list_profiles, load_profile
from virtual_server import Device, VirtualModbusTCPServer, publish
from virtual_server.devices import RandomTestDevice
from virtual_server.devices.sdm630 import METER_CODE_ADDRESS, Sdm630


def identify(port: int, units: list[int], timeout_s: float = 3.0) -> dict[int, ProfileMatch | None]:
    async def scenario():
        connection = ModbusConnection(Endpoint("127.0.0.1", port, 1, timeout_s=1.0, retries=0))
        try:
            return {unit: await match_profile(connection, unit, timeout_s) for unit in units}
        finally:
            connection.close()

    return asyncio.run(asyncio.wait_for(scenario(), 30))


class TextSignatureDevice(Device):
    """Holds ASCII text in holding registers (as ABB's product type at 0x8960) and nothing
    else."""

    def __init__(self, address: int, text: str, registers: int) -> None:
        self.address, self.text, self.registers = address, text, registers

    def update(self, memory) -> None:
        raw = self.text.encode().ljust(2 * self.registers, b"\0")
        words = {
            self.address + i: int.from_bytes(raw[2 * i : 2 * i + 2], "big")
            for i in range(self.registers)
        }
        publish(memory, words, DataType.UINT16, FunctionCode.READ_HOLDING_REGISTERS)


def test_the_sdm630_simulator_is_identified_by_its_meter_code_and_a_wrong_code_is_not():
    devices = {
        1: Sdm630(seed=1),  # meter code 0x0070, as an SDM630 v2
        2: Sdm630(seed=2, meter_code=0x1234),  # a code no profile lists
        3: Sdm630(seed=3, meter_code=None),  # an early SDM630: exception 2 there
        4: RandomTestDevice(seed=4),
    }
    with VirtualModbusTCPServer(devices) as server:
        server.reset_requests()
        found = identify(server.port, [1, 2, 3, 4])
        requests = server.requests
        stats = server.stats

    match = found[1]
    assert match is not None
    assert match.value == 0x0070 and match.manufacturer == "Eastron"
    assert match.signature.address == METER_CODE_ADDRESS == 0xFC02
    # The simulator serves the `sdm630` profile's registers: that profile is among the matches,
    # and the one named first is the fullest map with this meter code.
    names = (match.profile, *match.also)
    assert "sdm630" in names
    sizes = {p.name: p.registers for p in list_profiles()}
    assert sizes[match.profile] == max(sizes[name] for name in names)
    assert "0x0070" in str(match) and match.profile in str(match)
    assert found[2] is None and found[3] is None and found[4] is None

    # Reads only, one request at a time, and each signature read once per unit.
    assert {r.function_code for r in requests} <= {3, 4}
    assert stats.max_in_flight == 1
    for unit in (1, 2, 3, 4):
        reads = [(r.function_code, r.address, r.count) for r in requests if r.unit_id == unit]
        assert len(reads) == len(set(reads)), unit
    # Unit 1 stopped at its match; unit 2 went through every signature without one.
    signatures = {p.signature.key for p in list_profiles() if p.signature is not None}
    assert {(r.function_code, r.address, r.count) for r in requests if r.unit_id == 2} == (
        signatures
    )


def test_a_text_signature_matches_its_prefix_only():
    text_profiles = [p for p in list_profiles() if p.signature and p.signature.text]
    if not text_profiles:  # pragma: no cover - the shipped library has ABB's text signature
        raise AssertionError("no shipped profile has a text signature")
    profile = text_profiles[0]
    signature = profile.signature
    wanted = signature.text[0]
    devices = {
        1: TextSignatureDevice(signature.address, wanted + "X", signature.registers),
        2: TextSignatureDevice(signature.address, "Z" + wanted, signature.registers),
    }
    with VirtualModbusTCPServer(devices) as server:
        found = identify(server.port, [1, 2])
    assert found[1] is not None and found[1].profile == profile.name
    assert found[1].value == wanted + "X"
    assert found[2] is None


def test_the_search_is_bounded_by_its_timeout_on_a_silent_peer(silent_port):
    started = time.monotonic()
    found = identify(silent_port, [1], timeout_s=0.5)
    elapsed = time.monotonic() - started
    assert found == {1: None}
    assert elapsed < 1.5, elapsed


def test_a_silent_unit_costs_one_request_timeout_not_one_per_signature(silent_port):
    # Each request may wait 1 s (the connection's timeout); the search may take 10 s.
    started = time.monotonic()
    found = identify(silent_port, [1, 2], timeout_s=10.0)
    elapsed = time.monotonic() - started
    assert found == {1: None, 2: None}
    assert 1.5 < elapsed < 4.0, elapsed  # about one timeout per unit


def test_a_unit_that_answers_exceptions_is_searched_to_the_end():
    """A unit answering exception 2 to a signature read is present: that signature is not
    its, and every other one is still tried (each once)."""
    with VirtualModbusTCPServer({1: RandomTestDevice(seed=1)}) as server:
        server.reset_requests()
        assert identify(server.port, [1]) == {1: None}
        reads = {(r.function_code, r.address, r.count) for r in server.requests}
    assert reads == {p.signature.key for p in list_profiles() if p.signature is not None}


def test_an_unreachable_link_ends_the_search_at_once(refused_port):
    started = time.monotonic()
    assert identify(refused_port, [1], timeout_s=5.0) == {1: None}
    assert time.monotonic() - started < 2.0


def test_profiles_given_explicitly_limit_the_search():
    with VirtualModbusTCPServer({1: Sdm630(seed=5)}) as server:
        server.reset_requests()

        async def scenario():
            connection = ModbusConnection(Endpoint("127.0.0.1", server.port, 1, retries=0))
            try:
                return await match_profile(connection, 1, 3.0, [load_profile("sdm630")])
            finally:
                connection.close()

        match = asyncio.run(asyncio.wait_for(scenario(), 10))
        requests = server.requests
    assert match is not None and match.profile == "sdm630" and match.also == ()
    assert [(r.function_code, r.address, r.count) for r in requests] == [(3, 0xFC02, 1)]

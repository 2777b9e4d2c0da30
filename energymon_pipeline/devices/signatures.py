"""Which shipped profile a device is, from its signature registers (what `discover` calls).

    match = await match_profile(connection, unit, timeout_s)   # ProfileMatch | None

`match_profile(connection: ModbusConnection, unit: int, timeout_s: float) -> ProfileMatch |
None` reads, on `unit` of an already created `modbus.client.ModbusConnection` (one link), the
signature registers the shipped profiles name in their metadata (e.g. Eastron's meter code,
holding register 0xFC02; ABB's product type text at 0x8960), and returns the profile whose
signature value the device holds, or None when none does.

Why this shape:

- One request at a time, each signature read once: profiles whose signatures share the same
  registers (all Eastron v2 meters read 0xFC02) share one request, whose answer is compared
  with each of them. A bus carries one request at a time, so nothing here runs concurrently.
- Bounded: the whole identification of one unit ends within `timeout_s` (each request's own
  timeout is what remains of it, at most the connection's timeout), whatever the device does.
  A unit that answers a signature read with an exception (most devices answer exception 2
  for registers they do not have), or, once it has answered something, does not answer one
  in time, simply does not match that signature; the next one is tried while time remains.
  A unit that does not answer its first read at all is taken as absent and costs one
  timeout, not one per signature (a scan of 247 unit ids on a bus stays short), and a link
  that cannot be connected ends the search at once.
- Text signatures (a model name string) are read first: they are the least likely to match
  by accident; then 32-bit and 16-bit model codes.
- Several profiles may describe the same device (the original's 27 SDM630 registers and the
  fuller SDM630 v2 map share the meter code 0x0070): `ProfileMatch.profile` is the one with
  the most registers (ties: by name), `also` names the others.

Only reads (function codes 3 and 4) are sent; nothing is written to a device.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass

from energymon_pipeline.modbus.client import ErrorKind, ModbusConnection
from energymon_pipeline.modbus.decode import decode_values
from energymon_pipeline.modbus.types import ReadRequest
from energymon_pipeline.registry.profiles import Profile, Signature, list_profiles

__all__ = ["ProfileMatch", "match_profile", "signature_value"]

#: Errors after which no other request on this link can succeed either.
_LINK_FAILURES = frozenset({ErrorKind.REFUSED, ErrorKind.CONNECTION})


@dataclass(frozen=True, slots=True)
class ProfileMatch:
    """A device identified by a shipped profile's signature."""

    #: The profile to import for this device (`energymon profiles import NAME`).
    profile: str
    manufacturer: str
    models: tuple[str, ...]
    #: The signature that matched and what the device answered there.
    signature: Signature
    value: int | str
    #: Other profiles whose signature the same value matches (smaller maps of the device).
    also: tuple[str, ...] = ()

    def __str__(self) -> str:
        value = self.value
        if isinstance(value, str):
            shown = repr(value)
        else:
            shown = f"{value} (0x{value:04X})" if value >= 0 else str(value)
        return f"{self.manufacturer} {'/'.join(self.models)} (profile {self.profile}, {shown})"


def signature_value(signature: Signature, words: list[int]) -> int | str:
    """What `words` (the registers read at the signature) hold: the whole number for a
    model-code signature, the text (NULs and trailing blanks removed) for a text one."""
    if signature.text:
        raw = b"".join(word.to_bytes(2, "big") for word in words)
        return raw.split(b"\x00", 1)[0].decode("ascii", errors="replace").rstrip()
    assert signature.data_type is not None
    (value,) = decode_values(words, signature.data_type, signature.word_order)
    return int(value)


def _matches(signature: Signature, value: int | str) -> bool:
    if signature.text:
        return isinstance(value, str) and any(value.startswith(t) for t in signature.text)
    return isinstance(value, int) and value in signature.values


def _read_order(key: tuple[int, int, int], profiles: list[Profile]) -> tuple[int, int, int, int]:
    signature = profiles[0].signature
    assert signature is not None
    strength = 0 if signature.text else (1 if signature.registers > 1 else 2)
    return (strength, *key)


async def match_profile(
    connection: ModbusConnection,
    unit: int,
    timeout_s: float,
    profiles: list[Profile] | None = None,
) -> ProfileMatch | None:
    """The shipped profile whose signature `unit` on `connection`'s link holds, or None.

    Ends within `timeout_s`; never raises for device or network faults (a unit that does not
    answer is simply not identified). `profiles` defaults to every shipped profile."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    by_read: dict[tuple[int, int, int], list[Profile]] = defaultdict(list)
    for profile in list_profiles() if profiles is None else profiles:
        if profile.signature is not None:
            by_read[profile.signature.key].append(profile)
    base = connection.endpoint
    answered = False
    for _key, group in sorted(by_read.items(), key=lambda item: _read_order(*item)):
        remaining = deadline - time.monotonic()
        if remaining <= 0.01:
            return None
        signature = group[0].signature
        assert signature is not None
        meter = dataclasses.replace(
            base, unit_id=unit, timeout_s=min(remaining, base.timeout_s), retries=0
        )
        request = ReadRequest(signature.function_code, signature.address, signature.registers)
        block = await connection.read(request, meter)
        if block.error is not None:
            if block.error.kind in _LINK_FAILURES:
                return None
            if block.error.kind is ErrorKind.MODBUS_EXCEPTION:
                answered = True
            elif not answered:
                return None  # silent from the first request on: taken as absent
            continue
        answered = True
        assert block.data is not None
        hits: list[tuple[Profile, int | str]] = []
        for profile in group:
            assert profile.signature is not None
            value = signature_value(profile.signature, block.data)
            if _matches(profile.signature, value):
                hits.append((profile, value))
        if hits:
            hits.sort(key=lambda hit: (-hit[0].registers, hit[0].name))
            best, value = hits[0]
            assert best.signature is not None
            return ProfileMatch(
                best.name,
                best.manufacturer,
                best.models,
                best.signature,
                value,
                tuple(p.name for p, _ in hits[1:]),
            )
    return None

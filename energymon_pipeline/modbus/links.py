"""Links: what meters share on the way to them.

A link is a Modbus TCP endpoint (host, port and framer: a gateway in front of an RS-485 bus is
one link with many unit ids) or a local serial port. A bus carries one request at a time and
gateways accept few connections, so a read opens a link's connections once and sends one
request at a time on each (modbus.reader), and no two Dagster runs talk to one link at once
(ops/link_pools.py).

The link's settings are columns of each of its meters' rows (`max_connections`,
`inter_request_delay_ms`, `connect_delay_s`, and a serial port's line settings). When the rows
disagree, the link takes the most careful value set on any of them, whatever the meters'
order (a row that leaves one NULL does not count): the fewest connections, the longest
pauses. A serial port's line settings come from its meter with the lowest id (a port has one
speed), and every other meter that disagrees is named in `Link.conflicts`. `energymon meters
link` sets a link's values on all of its rows at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from energymon_pipeline.modbus.types import Endpoint, MeterSpec


class LinkUnavailable(Exception):
    """A link_guard (modbus.reader) could not get the link in time: its meters are not read
    in this run, and the message says why."""


@dataclass(frozen=True)
class Link:
    key: str
    #: How to connect: the link's settings; unit id, timeout and retries are per request.
    endpoint: Endpoint
    meters: tuple[MeterSpec, ...]
    conflicts: tuple[str, ...] = field(default=())

    @property
    def connections(self) -> int:
        """Connections a read opens: the link's limit, never more than it has meters; a
        serial port opens once (pymodbus opens it exclusively)."""
        if self.endpoint.serial is not None:
            return 1
        return max(1, min(self.endpoint.max_connections or 1, len(self.meters)))


def link_endpoint(endpoints: Iterable[Endpoint]) -> Endpoint:
    """One endpoint for the connections of the link these meters' endpoints share (ordered by
    meter id): the most careful of their link settings."""
    endpoints = list(endpoints)
    first = endpoints[0]
    limits = [e.max_connections for e in endpoints if e.max_connections is not None]
    return replace(
        first,
        unit_id=0,
        timeout_s=max(e.timeout_s for e in endpoints),
        retries=max(e.retries for e in endpoints),
        request_delay_s=0.0,
        connect_delay_s=max(e.connect_delay_s for e in endpoints),
        max_connections=min(limits) if limits else 1,
        inter_request_delay_s=max(e.inter_request_delay_s for e in endpoints),
    )


def group_links(meters: Iterable[MeterSpec]) -> list[Link]:
    """The meters' links, in the order of each link's first meter."""
    by_key: dict[str, list[MeterSpec]] = {}
    for meter in meters:
        by_key.setdefault(meter.endpoint.link_key, []).append(meter)
    links = []
    for key, members in by_key.items():
        ordered = sorted(members, key=lambda m: m.meter_id)
        endpoint = link_endpoint(m.endpoint for m in ordered)
        conflicts = tuple(
            f"meter {m.meter_id}: serial settings {m.endpoint.serial} differ from "
            f"{endpoint.serial} of meter {ordered[0].meter_id} on the same port; the port "
            "is opened with the latter"
            for m in ordered[1:]
            if m.endpoint.serial != endpoint.serial
        )
        links.append(Link(key, endpoint, tuple(members), conflicts))
    return links

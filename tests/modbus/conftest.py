"""Misbehaving Modbus TCP peers on loopback: small asyncio servers that hang up, answer
garbage or lie in their answers, for the client's fault handling. They run on their own event
loop in a thread, so the code under test (which runs its own loop, or a CLI subprocess) talks
to them over real TCP."""

from __future__ import annotations

import asyncio
import random
import struct
import threading
from dataclasses import dataclass, field

import pytest

#: How long a peer waits for a request or a client's close; every wait here is bounded.
PEER_WAIT_S = 10.0


def mbap_answer(request: bytes, words: list[int], byte_count: int | None = None,
                tid: int | None = None) -> bytes:  # fmt: skip
    """A Modbus TCP answer to a register read `request` carrying `words`, with a correct
    MBAP header; `byte_count` overrides the PDU's byte count (to make it lie), `tid` the
    transaction id."""
    data = b"".join(struct.pack(">H", w) for w in words)
    pdu = bytes([request[7], len(data) if byte_count is None else byte_count]) + data
    frame_tid = struct.unpack(">H", request[:2])[0] if tid is None else tid
    return struct.pack(">HHHB", frame_tid, 0, len(pdu) + 1, request[6]) + pdu


def requested_count(request: bytes) -> int:
    return struct.unpack(">H", request[10:12])[0]


@dataclass
class Peer:
    """One misbehaving server: `behaviour` names what it does; `port` is where it listens;
    `connections` and `requests` count what arrived."""

    behaviour: str
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    garbage: bytes = b""
    tasks: set[asyncio.Task] = field(default_factory=set)

    def answer(self, request: bytes) -> bytes | None:
        """The bytes to send for one request; None hangs up instead."""
        count = requested_count(request)
        words = [0x4366, 0x2000] * (count // 2) + [0x0101] * (count % 2)  # FLOAT32 230.125
        if self.behaviour == "closes_after_request":
            return None
        if self.behaviour == "answers_garbage":
            return self.garbage
        if self.behaviour == "byte_count_too_large":
            return mbap_answer(request, words, byte_count=2 * count + 2)
        if self.behaviour == "byte_count_too_small":
            return mbap_answer(request, words, byte_count=2 * count - 2)
        if self.behaviour == "answers_too_many_registers":
            return mbap_answer(request, [*words, 0x0101])
        if self.behaviour == "stale_answer_first":
            # A late answer to some earlier transaction arrives first; then the real one.
            tid = struct.unpack(">H", request[:2])[0]
            return mbap_answer(request, [999] * count, tid=tid + 100) + mbap_answer(request, words)
        if self.behaviour == "late_first_answer":
            return mbap_answer(request, [111 if len(self.requests) == 1 else 222] * count)
        raise AssertionError(f"unknown behaviour {self.behaviour!r}")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            if self.behaviour == "closes_at_once":
                return
            while True:
                request = await asyncio.wait_for(reader.readexactly(12), PEER_WAIT_S)
                self.requests.append(request)
                answer = self.answer(request)
                if answer is None:
                    return
                if self.behaviour == "late_first_answer" and len(self.requests) == 1:
                    await asyncio.sleep(LATE_S)
                writer.write(answer)
                await asyncio.wait_for(writer.drain(), PEER_WAIT_S)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass  # the client hung up (or never asked): done with this connection
        finally:
            writer.close()
            self.tasks.discard(task)


#: How late `late_first_answer` answers its first request.
LATE_S = 0.6


class Peers:
    """Starts peers on one event loop in a daemon thread; `stop` closes them all."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[asyncio.Server] = []
        self.peers: list[Peer] = []

    def start(self, behaviour: str, garbage_seed: int = 0, garbage_size: int = 23) -> Peer:
        peer = Peer(behaviour, garbage=random.Random(garbage_seed).randbytes(garbage_size))

        async def serve() -> asyncio.Server:
            return await asyncio.start_server(peer.handle, "127.0.0.1", 0)

        server = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(timeout=10)
        self.servers.append(server)
        self.peers.append(peer)
        peer.port = server.sockets[0].getsockname()[1]
        return peer

    def stop(self) -> None:
        async def close_all() -> None:
            for server in self.servers:
                server.close()
            tasks = [task for peer in self.peers for task in peer.tasks]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=PEER_WAIT_S)

        try:
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(timeout=PEER_WAIT_S)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=PEER_WAIT_S)
            if not self.thread.is_alive():
                self.loop.close()


@pytest.fixture
def peers():
    """peers.start(behaviour) -> a running misbehaving Modbus TCP peer on 127.0.0.1."""
    started = Peers()
    yield started
    started.stop()

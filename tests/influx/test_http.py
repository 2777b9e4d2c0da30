"""influx/http.py against servers that behave badly in the ways a long-lived connection meets:
the writer's own behaviour against a real influxd is tests/influx/test_writer.py's."""

from __future__ import annotations

import socket
import threading

import pytest

from energymon_pipeline.influx.http import HttpError, InfluxHttp, TransportError

PING = b"HTTP/1.1 204 No Content\r\nX-Influxdb-Version: 1.8.10\r\nContent-Length: 0\r\n\r\n"


class OneShotServer:
    """Answers each connection's first request, then closes it without saying so (as a server
    does with a kept-alive connection that sat idle past its timeout); counts connections."""

    def __init__(self, answer: bytes = PING, wait_for_request: bool = True) -> None:
        self.answer = answer
        self.wait_for_request = wait_for_request
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with connection:
                connection.settimeout(2)
                data = b""
                try:
                    while self.wait_for_request and b"\r\n\r\n" not in data:
                        chunk = connection.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    connection.sendall(self.answer)
                except OSError:
                    pass

    def __enter__(self) -> OneShotServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()


def test_a_kept_alive_connection_the_server_closed_is_replaced_once():
    with OneShotServer() as server:
        client = InfluxHttp("127.0.0.1", server.port, timeout_s=2)
        try:
            assert client.ping() == "1.8.10"
            assert client.ping() == "1.8.10"  # the first connection is gone: a new one
            assert client.ping() == "1.8.10"
        finally:
            client.close()
    assert server.connections == 3


def test_an_error_status_is_an_http_error_with_the_body():
    body = b'{"error":"database not found: \\"x\\""}'
    answer = (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with OneShotServer(answer) as server:
        client = InfluxHttp("127.0.0.1", server.port, timeout_s=2)
        with pytest.raises(HttpError) as raised:
            client.write(["m value=1 1"], "x", "ms", None)
        client.close()
    assert raised.value.code == 404 and "database not found" in raised.value.content


def test_a_refused_connection_is_a_transport_error(refused_port):
    client = InfluxHttp("127.0.0.1", refused_port, timeout_s=2)
    with pytest.raises(TransportError) as raised:
        client.ping()
    assert (raised.value.kind, raised.value.reason) == ("unreachable", "connection refused")


def test_tls_to_a_plain_http_server_is_a_failed_handshake():
    """A plain HTTP server answers the TLS hello with HTTP text, which is no TLS record."""
    bad_request = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    with OneShotServer(bad_request, wait_for_request=False) as server:
        client = InfluxHttp("127.0.0.1", server.port, use_ssl=True, verify_ssl=False, timeout_s=2)
        with pytest.raises(TransportError) as raised:
            client.ping()
    assert (raised.value.kind, raised.value.reason) == ("unreachable", "TLS handshake failed")

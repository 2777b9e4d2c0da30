"""InfluxDB 1.x's HTTP API (/write, /query, /ping) on the standard library's http.client.

The writer needs four calls of that API, not a client library: influxdb-python (archived since
2020) brought requests, msgpack and pandas with it and cost every poll run 35 ms to import and
a few ms per request. One connection per `InfluxHttp`, kept alive between requests; a request
on a kept-alive connection the server has closed meanwhile is sent once more on a new one.

Failures are two exceptions the writer sorts (influx/writer.py): `HttpError`, an answer with an
error status (or an error inside a query's answer), and `TransportError`, no answer at all.
"""

from __future__ import annotations

import base64
import errno
import http.client
import json
import socket
import ssl
from urllib.parse import urlencode


class HttpError(Exception):
    """InfluxDB answered with an error: `code` is the HTTP status (None for an error inside
    a query's 200 answer, e.g. "database not found"), `content` the body or message."""

    def __init__(self, code: int | None, content: str) -> None:
        super().__init__(content)
        self.code = code
        self.content = content


class TransportError(Exception):
    """No HTTP answer. `kind`: "connect timeout", "read timeout" or "unreachable";
    `reason`: what happened, for a person (connection refused, host name not found, ...)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


def _unreachable(error: OSError) -> TransportError:
    if isinstance(error, TimeoutError):
        return TransportError("connect timeout", "connection timed out")
    if isinstance(error, ssl.SSLError | ssl.CertificateError):
        return TransportError("unreachable", "TLS handshake failed")
    if isinstance(error, ConnectionRefusedError):
        return TransportError("unreachable", "connection refused")
    if isinstance(error, socket.gaierror):
        return TransportError("unreachable", "host name not found")
    if error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return TransportError("unreachable", "network unreachable")
    return TransportError("unreachable", "connection failed")


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class InfluxHttp:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        use_ssl: bool = False,
        verify_ssl: bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        self._host, self._port, self._timeout_s = host, port, timeout_s
        self._ssl = use_ssl
        self._verify_ssl = verify_ssl
        self._headers = {"Accept": "application/json"}
        if username:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._ssl:
            context = ssl.create_default_context()
            if not self._verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout_s, context=context
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
        try:
            connection.connect()
        except (OSError, ssl.CertificateError) as error:
            connection.close()
            raise _unreachable(error) from error
        return connection

    def request(
        self, method: str, path: str, params: dict[str, str], body: bytes | None = None
    ) -> tuple[int, bytes, http.client.HTTPMessage]:
        """(status, body, headers) of one request; TransportError when nothing answered."""
        url = f"{path}?{urlencode(params)}" if params else path
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        for attempt in (1, 2):
            reused = self._connection is not None
            if self._connection is None:
                self._connection = self._connect()
            connection = self._connection
            try:
                connection.request(method, url, body=body, headers=headers)
                response = connection.getresponse()
                content = response.read()
            except TimeoutError as error:
                self.close()
                raise TransportError("read timeout", "no answer") from error
            except (OSError, http.client.HTTPException) as error:
                self.close()
                # A kept-alive connection the server closed while idle: once more, anew.
                if reused and attempt == 1:
                    continue
                raise TransportError("unreachable", "connection failed") from error
            if response.will_close:
                self.close()
            return response.status, content, response.headers
        raise AssertionError("unreachable")  # the loop returns or raises

    def write(
        self, lines: list[str], database: str, precision: str, retention_policy: str | None
    ) -> None:
        params = {"db": database, "precision": precision}
        if retention_policy:
            params["rp"] = retention_policy
        status, content, _ = self.request("POST", "/write", params, "\n".join(lines).encode())
        if status != 204:
            raise HttpError(status, content.decode("utf-8", errors="replace"))

    def query(self, q: str, database: str | None = None, epoch: str | None = None) -> list[dict]:
        """The statement's results (each a dict with its `series`); a statement that changes
        something (CREATE, ALTER, ...) is POSTed, as InfluxDB requires."""
        params = {"q": q}
        if database:
            params["db"] = database
        if epoch:
            params["epoch"] = epoch
        method = "GET" if q.lstrip().upper().startswith(("SELECT", "SHOW")) else "POST"
        status, content, _ = self.request(method, "/query", params)
        text = content.decode("utf-8", errors="replace")
        if status != 200:
            raise HttpError(status, text)
        try:
            results = json.loads(text).get("results", [])
        except (ValueError, AttributeError) as error:
            raise HttpError(status, f"not a query answer: {text[:100]}") from error
        for result in results:
            if "error" in result:
                raise HttpError(None, str(result["error"]))
        return results

    def ping(self) -> str:
        """The server's version (X-Influxdb-Version)."""
        status, content, headers = self.request("GET", "/ping", {})
        if status != 204:
            raise HttpError(status, content.decode("utf-8", errors="replace"))
        return headers.get("X-Influxdb-Version", "unknown")

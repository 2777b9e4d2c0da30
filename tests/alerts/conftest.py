"""Real receivers on loopback for the alert tests: an HTTP server that records every POST
(and can fail the first N), and an SMTP server (aiosmtpd) with STARTTLS and a login, its
certificate made by openssl for the test."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

TOKEN = "hook-token-5b1e0c"
SMTP_USER, SMTP_PASSWORD = "alerts@example.org", "smtp-secret-7f3d9a"


@dataclass
class Receiver:
    """What the webhook receiver got; `fail_next` answers that many POSTs with 503."""

    port: int = 0
    received: list[dict] = field(default_factory=list)
    attempts: int = 0
    fail_next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{TOKEN}"

    def texts(self) -> list[str]:
        return [r["text"] for r in self.received]

    def kinds(self) -> list[str]:
        return [r["kind"] for r in self.received]


@pytest.fixture
def receiver():
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                state.attempts += 1
                failing = state.fail_next > 0
                if failing:
                    state.fail_next -= 1
                elif self.path == f"/hooks/{TOKEN}":
                    state.received.append(json.loads(body))
            status = 503 if failing else (200 if self.path == f"/hooks/{TOKEN}" else 404)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@dataclass
class Mailbox:
    host: str
    port: int
    ca_file: str
    messages: list = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            "ENERGYMON_SMTP_HOST": self.host,
            "ENERGYMON_SMTP_PORT": str(self.port),
            "ENERGYMON_SMTP_SECURITY": "starttls",
            "ENERGYMON_SMTP_USER": SMTP_USER,
            "ENERGYMON_SMTP_PASSWORD": SMTP_PASSWORD,
            "ENERGYMON_SMTP_FROM": "energymon@example.org",
            "ENERGYMON_SMTP_TO": "ops@example.org,oncall@example.org",
            "ENERGYMON_SMTP_CA_FILE": self.ca_file,
        }


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the SMTP test server's certificate")
    folder = tmp_path_factory.mktemp("smtp-tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def mailbox(certificate):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    box = Mailbox("127.0.0.1", 0, str(cert))

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
            box.messages.append(envelope)
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == (SMTP_USER, SMTP_PASSWORD)
        if ok:
            box.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)  # handled=True: no answer at all

    with socket.socket() as probe:  # aiosmtpd's controller needs a port number
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    controller.start()
    box.port = port
    yield box
    controller.stop()


class Clock:
    """A clock the test moves; starts now (UTC)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()

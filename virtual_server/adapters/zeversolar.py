"""Bridge for a Zeversolar TLC10000 inverter, which does not speak Modbus.

The inverter's WiFi module serves a plain-text status page, `http://HOST:PORT/home.cgi?sid=0`:
one value per line, line index 10 the current AC power in W (an integer) and line index 11 the
energy produced today in kWh. The bridge fetches it on every update tick and publishes, as
registers type `virtual-tlc10000` (FLOAT32, function code 4, big-endian words and bytes):

    input registers 0-1   power in kW
    input registers 2-3   energy today in kWh

On any failure (unreachable, timeout, non-2xx answer, short or unparsable body) it publishes
no value: reads of those registers are answered with a Modbus exception, the poller records a
gap, and one log line names the cause. The original published 0.0 instead, which a dashboard's
`non_negative_difference` turned into a whole day's production counted twice. The inverter
switches its WiFi off at night, so gaps every night are normal.
"""

from __future__ import annotations

import http.client
import logging
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from virtual_server.devices.base import Device, Value, as_float32

__all__ = ["FetchError", "InverterReading", "ZeversolarTLC10000", "fetch_reading", "parse_home"]

logger = logging.getLogger(__name__)

POWER_ADDRESS = 0
ENERGY_TODAY_ADDRESS = 2
POWER_LINE = 10
ENERGY_TODAY_LINE = 11
DEFAULT_TIMEOUT_S = 5.0
#: A real page is a few hundred bytes; anything far larger is not the status page.
MAX_BODY_BYTES = 64 * 1024


class FetchError(Exception):
    """Why no reading could be had, in words for one log line."""


@dataclass(frozen=True)
class InverterReading:
    power_w: int
    energy_today_kwh: float

    @property
    def power_kw(self) -> float:
        return self.power_w / 1000


def parse_home(body: str) -> InverterReading:
    """The reading in a `home.cgi` body; FetchError when the body is short or unparsable."""
    lines = body.splitlines()
    if len(lines) <= ENERGY_TODAY_LINE:
        raise FetchError(
            f"short body: {len(lines)} line(s), the energy today is on line index "
            f"{ENERGY_TODAY_LINE} (the 12th line)"
        )
    power_text = lines[POWER_LINE].strip()
    energy_text = lines[ENERGY_TODAY_LINE].strip()
    try:
        power_w = int(power_text)
    except ValueError:
        raise FetchError(
            f"line index {POWER_LINE} is {power_text[:40]!r}, not the power in W (an integer)"
        ) from None
    try:
        energy = float(energy_text)
    except ValueError:
        energy = math.nan
    if not math.isfinite(energy) or energy < 0:
        raise FetchError(
            f"line index {ENERGY_TODAY_LINE} is {energy_text[:40]!r}, not the energy today in "
            "kWh (a non-negative number)"
        )
    if power_w < 0:
        raise FetchError(f"line index {POWER_LINE} is {power_w} W; a power below 0 is not real")
    return InverterReading(power_w=power_w, energy_today_kwh=energy)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is not the status page: treat it as the non-2xx answer it is."""

    def redirect_request(self, *args, **kwargs):
        return None


# No proxies: the inverter is on the local network, and an http_proxy variable set for the
# container's internet access must not swallow requests to it.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def fetch_reading(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> InverterReading:
    """GET `url` and parse it; FetchError naming the cause otherwise.

    Every wait (connect, the answer, each piece of the body) is bounded by `timeout_s`, and the
    body must be complete `timeout_s` after the request started, so a server trickling bytes
    cannot hold an update for long: a fetch never takes much more than twice `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    try:
        with _OPENER.open(url, timeout=timeout_s) as response:
            if not 200 <= response.status < 300:
                raise FetchError(f"HTTP {response.status} {response.reason}")
            chunks: list[bytes] = []
            size = 0
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FetchError(f"timed out after {timeout_s:g} s reading the body")
                chunk = response.read1(4096)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise FetchError(f"body larger than {MAX_BODY_BYTES} bytes")
                chunks.append(chunk)
    except FetchError:
        raise
    except urllib.error.HTTPError as error:
        error.close()
        raise FetchError(f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, TimeoutError):
            raise FetchError(f"timed out after {timeout_s:g} s") from None
        raise FetchError(f"unreachable: {_describe(reason)}") from None
    except TimeoutError:
        raise FetchError(f"timed out after {timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as error:
        raise FetchError(f"connection failed: {_describe(error)}") from None
    body = b"".join(chunks)
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise FetchError("body is not text (non-ASCII bytes)") from None
    return parse_home(text)


def _describe(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


class ZeversolarTLC10000(Device):
    """Publishes the inverter's power (kW) at input registers 0-1 and energy today (kWh) at
    2-3, or no value at both when the page cannot be had."""

    name = "tlc10000"

    def __init__(self, host: str, port: int = 80, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be above 0, got {timeout_s}")
        self.url = f"http://{_url_host(host)}:{port}/home.cgi?sid=0"
        self.timeout_s = timeout_s
        #: The last reading published, or None after a failure.
        self.reading: InverterReading | None = None
        #: Why the last update published no value (None after a success).
        self.last_error: str | None = None

    def values(self) -> dict[int, Value]:
        try:
            reading = fetch_reading(self.url, self.timeout_s)
        except FetchError as error:
            self.reading, self.last_error = None, str(error)
            logger.warning("zeversolar %s: no value published: %s", self.url, error)
            return {POWER_ADDRESS: None, ENERGY_TODAY_ADDRESS: None}
        if self.last_error is not None:
            logger.info("zeversolar %s: values again after: %s", self.url, self.last_error)
        self.reading, self.last_error = reading, None
        return {
            POWER_ADDRESS: as_float32(reading.power_kw),
            ENERGY_TODAY_ADDRESS: as_float32(reading.energy_today_kwh),
        }


def _url_host(host: str) -> str:
    """An IPv6 literal needs brackets inside a URL."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host

"""Writing line protocol batches to InfluxDB 1.x, with failures sorted into what the caller
does next: wait and retry (unreachable, server error), fix the configuration (auth, missing
database), or set the batch aside (bad request: re-sending the same points fails the same way).

Every error is an `EnergymonError` with one line naming host:port/database.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from energymon_pipeline.errors import EnergymonError
from energymon_pipeline.influx.http import HttpError, InfluxHttp, TransportError, quote_ident
from energymon_pipeline.influx.points import PRECISION
from energymon_pipeline.influx.retention import retention_hours

# InfluxDB's guidance for 1.x is batches of about 5000 points; a spooled batch larger than that
# goes out in several requests (re-sending all of them after a failure is harmless).
DEFAULT_BATCH_SIZE = 5000
#: Requests of one batch in flight at once, each on its own connection: InfluxDB parses and
#: indexes each request on its own core (500 meters' 14,000 points went out in 0.035-0.05 s
#: instead of 0.05-0.055 with two at once, on two cores); two keep a small server's load low.
MAX_IN_FLIGHT = 2
_MAX_DETAIL = 300

#: What the HTTP client raises (influx/http.py).
_CLIENT_ERRORS = (HttpError, TransportError)


@dataclass(frozen=True)
class InfluxTarget:
    """Where to write. `username` None (or "") means no authentication."""

    host: str
    port: int = 8086
    database: str = "influx_default"
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    timeout_s: float = 10.0
    verify_ssl: bool = True
    #: Retention policy the points are written to; None = the database's default policy.
    retention_policy: str | None = None

    @property
    def where(self) -> str:
        scheme = "https" if self.ssl else "http"
        where = f"{scheme}://{self.host}:{self.port}/{self.database}"
        return (
            f"{where} (retention policy {self.retention_policy})"
            if self.retention_policy
            else where
        )

    @classmethod
    def from_settings(cls, influx) -> InfluxTarget:
        """The target of `settings.influx()` (an InfluxSettings)."""
        return cls(
            host=influx.host,
            port=influx.port,
            database=influx.database,
            username=influx.username,
            password=influx.password,
            timeout_s=influx.timeout_s,
        )

    def __repr__(self) -> str:  # never show the password
        return f"InfluxTarget({self.where!r}, username={self.username!r})"


class InfluxError(EnergymonError):
    """A write or query to InfluxDB failed. `retryable`: whether trying again later can help."""

    retryable = False


class InfluxUnreachable(InfluxError):
    """No HTTP answer: connection refused, name not found, TLS failure or timeout."""

    retryable = True


class InfluxServerError(InfluxError):
    """InfluxDB answered 5xx (or another unexpected status)."""

    retryable = True


class InfluxAuthError(InfluxError):
    """InfluxDB refused the credentials (401) or the user lacks a privilege (403)."""


class InfluxDatabaseMissing(InfluxError):
    """The database does not exist and could not (or must not) be created."""


class InfluxBadRequest(InfluxError):
    """InfluxDB refused the points themselves (400: unparsable line, field type conflict).
    Points of the batch that were valid may have been stored (a "partial write")."""


def _detail(content: object) -> str:
    """The server's `error` text, on one line, shortened."""
    if isinstance(content, bytes):
        content = content.decode("utf-8", errors="replace")
    text = str(content)
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and "error" in decoded:
        text = str(decoded["error"])
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def _series(results: list[dict]) -> list[tuple[str, dict, list[dict]]]:
    """(measurement, tags, rows as {column: value}) of each series of a query's results."""
    series = []
    for result in results:
        for one in result.get("series", []):
            columns = one.get("columns", [])
            rows = [dict(zip(columns, values, strict=False)) for values in one.get("values", [])]
            series.append((one.get("name"), one.get("tags") or {}, rows))
    return series


class InfluxWriter:
    """Writes line protocol batches to one database; creates it on first need when allowed.

    One attempt per request: retrying is the spool's and the op's job.
    """

    def __init__(
        self,
        target: InfluxTarget,
        *,
        create_database: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.target = target
        self.create_database = create_database
        self.batch_size = batch_size
        self._client = self._new_client()
        #: More connections for a batch's requests in flight at once (one connection serves
        #: one thread), made on first need.
        self._extra_clients: list[InfluxHttp] = []

    def _new_client(self) -> InfluxHttp:
        target = self.target
        return InfluxHttp(
            target.host,
            target.port,
            username=target.username or None,
            password=target.password if target.username else None,
            use_ssl=target.ssl,
            verify_ssl=target.verify_ssl,
            timeout_s=target.timeout_s,
        )

    def __enter__(self) -> InfluxWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        for client in [self._client, *self._extra_clients]:
            client.close()

    def __repr__(self) -> str:
        return f"InfluxWriter({self.target!r})"

    def write(self, lines: Sequence[str]) -> None:
        """Writes the lines (precision `PRECISION`); returns once InfluxDB acknowledged them all.
        Creates the database if it is missing and `create_database` is on."""
        if not lines:
            return
        try:
            self._write(lines)
            return
        except HttpError as error:
            if error.code != 404 or "database not found" not in _detail(error.content):
                raise self._classify(error, "write") from error
            missing = error
        except _CLIENT_ERRORS as error:
            raise self._classify(error, "write") from error
        if not self.create_database:
            raise InfluxDatabaseMissing(
                f"InfluxDB at {self.target.where}: database {self.target.database!r} "
                "does not exist (creating it is turned off)"
            ) from missing
        self.ensure_database()
        try:
            self._write(lines)
        except _CLIENT_ERRORS as error:
            raise self._classify(error, "write") from error

    def _write(self, lines: Sequence[str]) -> None:
        """Every request of the batch, `MAX_IN_FLIGHT` at once; raises the first failure
        after all have ended (the caller re-sends the whole batch: points are idempotent)."""
        size = self.batch_size or len(lines)
        requests = -(-len(lines) // size)
        if requests == 1:
            self._send(self._client, list(lines))
            return
        from concurrent.futures import ThreadPoolExecutor

        # As many requests per lane on each (no larger than the batch size), so that the
        # lanes end together.
        lanes = min(MAX_IN_FLIGHT, requests)
        requests = -(-requests // lanes) * lanes
        size = -(-len(lines) // requests)
        chunks = [list(lines[i : i + size]) for i in range(0, len(lines), size)]
        while len(self._extra_clients) < lanes - 1:
            self._extra_clients.append(self._new_client())
        clients = [self._client, *self._extra_clients[: lanes - 1]]
        with ThreadPoolExecutor(lanes) as pool:
            futures = [
                pool.submit(self._send_lane, clients[lane], chunks[lane::lanes])
                for lane in range(lanes)
            ]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]

    def _send_lane(self, client: InfluxHttp, chunks: list[list[str]]) -> None:
        for chunk in chunks:
            self._send(client, chunk)

    def _send(self, client: InfluxHttp, lines: list[str]) -> None:
        client.write(lines, self.target.database, PRECISION, self.target.retention_policy)

    def query(self, q: str, epoch: str = "ms") -> list[tuple[str, dict, list[dict]]]:
        """Run an InfluxQL query on the target database; returns (measurement, tags, rows)
        per series. A missing database reads as no series."""
        try:
            results = self._client.query(q, database=self.target.database, epoch=epoch)
        except HttpError as error:
            if "database not found" in _detail(error.content):
                return []
            raise self._classify(error, "query") from error
        except _CLIENT_ERRORS as error:
            raise self._classify(error, "query") from error
        return _series(results)

    def ensure_database(self) -> None:
        """Creates the database unless it exists. A user without the right to create it gets
        an `InfluxDatabaseMissing` saying so."""
        database = self.target.database
        try:
            existing = {rows["name"] for rows in self._rows("SHOW DATABASES")}
            if database in existing:
                return
            self._client.query(f"CREATE DATABASE {quote_ident(database)}")
        except HttpError as error:
            if error.code == 403:
                user = self.target.username or "(anonymous)"
                raise InfluxDatabaseMissing(
                    f"InfluxDB at {self.target.where}: database {database!r} does not exist "
                    f"and user {user!r} may not create it (needs admin privilege); "
                    f'create it as an admin (CREATE DATABASE "{database}") and grant the '
                    "user WRITE on it"
                ) from error
            raise self._classify(error, "create database") from error
        except _CLIENT_ERRORS as error:
            raise self._classify(error, "create database") from error

    def ensure_retention_policy(self, name: str, duration: str) -> None:
        """Make sure the (non-default) retention policy `name` exists with `duration`
        (InfluxQL, e.g. 90d): nothing is sent when it already does, so a writer without admin
        rights works with a policy an admin created; creating or changing one needs admin."""
        self.ensure_database()
        database = self.target.database
        try:
            existing = {
                p["name"]: p["duration"]
                for p in self._rows(f"SHOW RETENTION POLICIES ON {quote_ident(database)}")
            }
            if name in existing and retention_hours(existing[name]) == retention_hours(duration):
                return
            verb = "ALTER" if name in existing else "CREATE"
            extra = "" if name in existing else " REPLICATION 1"
            self._client.query(
                f"{verb} RETENTION POLICY {quote_ident(name)} ON {quote_ident(database)} "
                f"DURATION {duration}{extra}"
            )
        except HttpError as error:
            if error.code == 403:
                verb = "ALTER" if name in existing else "CREATE"
                extra = "" if name in existing else " REPLICATION 1"
                raise InfluxAuthError(
                    f"InfluxDB at {self.target.where}: user {self.target.username!r} may not "
                    f"{verb.lower()} retention policy {name!r} (needs admin); as an admin run "
                    f'{verb} RETENTION POLICY "{name}" ON "{database}" DURATION {duration}{extra}'
                ) from error
            raise self._classify(error, f"retention policy {name}") from error
        except _CLIENT_ERRORS as error:
            raise self._classify(error, f"retention policy {name}") from error

    def _rows(self, q: str) -> list[dict]:
        """The rows of a statement that is not about this database (SHOW DATABASES, ...)."""
        return [row for _, _, rows in _series(self._client.query(q)) for row in rows]

    def ping(self) -> str:
        """The server's version; raises the classified error when it does not answer."""
        try:
            return self._client.ping()
        except _CLIENT_ERRORS as error:
            raise self._classify(error, "ping") from error

    def _classify(self, error: Exception, action: str) -> InfluxError:
        where = self.target.where
        if isinstance(error, TransportError):
            if error.kind == "read timeout":
                return InfluxUnreachable(
                    f"InfluxDB at {where}: no answer to {action} within {self.target.timeout_s:g} s"
                )
            if error.kind == "connect timeout":
                return InfluxUnreachable(
                    f"InfluxDB at {where} is unreachable: connection timed out after "
                    f"{self.target.timeout_s:g} s"
                )
            return InfluxUnreachable(f"InfluxDB at {where} is unreachable: {error.reason}")
        if isinstance(error, HttpError) and error.code is not None and error.code >= 500:
            return InfluxServerError(
                f"InfluxDB at {where}: server error on {action}: {_detail(error.content)}"
            )
        if isinstance(error, HttpError):
            detail = _detail(error.content)
            if error.code in (401, 403):
                user = self.target.username or "(anonymous)"
                what = "refused the credentials of" if error.code == 401 else "denied"
                return InfluxAuthError(
                    f"InfluxDB at {where} {what} user {user!r} on {action} "
                    f"(HTTP {error.code}: {detail})"
                )
            if error.code in (400, 413):
                return InfluxBadRequest(
                    f"InfluxDB at {where} rejected the points on {action} "
                    f"(HTTP {error.code}: {detail})"
                )
            return InfluxServerError(
                f"InfluxDB at {where}: unexpected HTTP {error.code} on {action}: {detail}"
            )
        return InfluxError(f"InfluxDB at {where}: {action} failed: {error}")

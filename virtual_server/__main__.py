"""`python -m virtual_server`: serve simulated meters, bridges, or a fleet for benchmarks.

Every option has an environment variable (flags win); see `--help` and
virtual_server/README.md. Exit status: 0 after SIGINT/SIGTERM, 1 for a configuration error
or a server that cannot start (one line on stderr), 2 for a usage error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import click

from energymon_pipeline.errors import EnergymonError
from virtual_server.devices import BUILTIN_DEVICES
from virtual_server.options import build_servers, parse_device_specs
from virtual_server.runner import LOG_FORMAT, serve
from virtual_server.schedule import UpdateSchedule
from virtual_server.settings import run_settings

_DEVICE_HELP = "; ".join(f"{name}: {what}" for name, (what, _) in BUILTIN_DEVICES.items())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--device",
    "devices",
    multiple=True,
    metavar="NAME[@UNIT]",
    help=(
        "Device to serve, repeatable; without @UNIT it answers every unit id no other "
        f"--device names. [env VIRTUAL_SERVER_DEVICES, comma-separated; default: test] "
        f"Devices: {_DEVICE_HELP}."
    ),
)
@click.option(
    "--host",
    default=None,
    help="Address to listen on. [env VIRTUAL_SERVER_LISTEN_HOST; default: VIRTUAL_SERVER_HOST, "
    "else localhost; 0.0.0.0 in the container image]",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="TCP port (0: any free one); a fleet uses this and the following ports. "
    "[env VIRTUAL_SERVER_PORT; default: 5020]",
)
@click.option(
    "--fleet",
    "fleet_size",
    type=click.IntRange(0, 100_000),
    default=None,
    help="Serve this many instances of the one --device (0: no fleet). "
    "[env VIRTUAL_SERVER_FLEET_SIZE; default: 0]",
)
@click.option(
    "--units-per-port",
    type=click.IntRange(1, 247),
    default=None,
    help="Fleet devices per port, at unit ids 1..N. "
    "[env VIRTUAL_SERVER_FLEET_UNITS_PER_PORT; default: 247]",
)
@click.option(
    "--response-delay-ms",
    type=click.FloatRange(0, 60_000),
    default=None,
    help="Delay every answer, like a real meter or gateway. "
    "[env VIRTUAL_SERVER_RESPONSE_DELAY_MS; default: 0]",
)
@click.option(
    "--gateway/--no-gateway",
    default=None,
    help="Act as a Modbus TCP to RS-485 gateway: each port serves one request at a time "
    "across all its connections, each taking --response-delay-ms. "
    "[env VIRTUAL_SERVER_GATEWAY; default: off]",
)
@click.option(
    "--max-connections",
    type=click.IntRange(0, 10_000),
    default=None,
    help="Connections each port holds at once; one more is accepted and closed at once, as "
    "cheap gateways do (0: no limit). [env VIRTUAL_SERVER_MAX_CONNECTIONS; default: 0]",
)
@click.option(
    "--status-file",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Keep the servers' counts (requests served, connections refused, most requests in "
    "flight) in this JSON file while running and at exit. "
    "[env VIRTUAL_SERVER_STATUS_FILE; default: none]",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
def main(
    devices,
    host,
    port,
    fleet_size,
    units_per_port,
    response_delay_ms,
    gateway,
    max_connections,
    status_file,
    log_level,
) -> None:
    """Serve simulated Modbus TCP devices (read-only), refreshed on the
    VIRTUAL_SERVER_UPDATE_CRON_{HOUR,MINUTE,SECOND}_TRIGGER schedule (defaults *, */1, 50:
    every minute at second 50, in TZ)."""
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)
    env = os.environ
    try:
        defaults = run_settings(env)
        source = "--device" if devices else "VIRTUAL_SERVER_DEVICES"
        specs = parse_device_specs(devices or defaults.devices, source)
        plan = build_servers(
            specs,
            host=host if host is not None else defaults.listen_host,
            port=port if port is not None else defaults.port,
            schedule=UpdateSchedule.from_environment(env),
            fleet_size=fleet_size if fleet_size is not None else defaults.fleet_size,
            units_per_port=units_per_port
            if units_per_port is not None
            else defaults.units_per_port,
            response_delay_ms=response_delay_ms
            if response_delay_ms is not None
            else defaults.response_delay_ms,
            gateway=gateway if gateway is not None else defaults.gateway,
            max_connections=max_connections
            if max_connections is not None
            else defaults.max_connections,
            env=env,
            source=source,
        )
        asyncio.run(
            serve(
                plan.servers,
                descriptions=plan.descriptions,
                status_file=status_file or defaults.status_file,
            )
        )
    except (EnergymonError, OSError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

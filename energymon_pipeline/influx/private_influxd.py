"""The config of a private influxd, the one the tests, the benchmark and `make run` start:
every listener on 127.0.0.1 or off, no usage reporting, everything under one folder.

The text is config/influxdb/private-influxd.conf, the only copy; scripts/local-influxd.sh fills
in the same placeholders. It lives outside the package (a tool for a checkout, not for the
installed pipeline), so this works from a source tree only.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

__all__ = ["TEMPLATE", "config_text"]

TEMPLATE = Path(__file__).resolve().parents[2] / "config" / "influxdb" / "private-influxd.conf"


def config_text(root: Path, http_port: int, rpc_port: int, *, auth_enabled: bool = False) -> str:
    """The config for an influxd keeping its meta, data, WAL and socket under `root`, serving
    HTTP on 127.0.0.1:`http_port` and its RPC service (backups) on 127.0.0.1:`rpc_port`."""
    try:
        template = Template(TEMPLATE.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{TEMPLATE} is missing: the private influxd's config comes from a source checkout"
        ) from None
    return template.substitute(
        root=str(root),
        http_port=int(http_port),
        rpc_port=int(rpc_port),
        auth_enabled="true" if auth_enabled else "false",
    )

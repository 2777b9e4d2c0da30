"""The private influxd's config (config/influxdb/private-influxd.conf), as the tests, the
benchmark and scripts/local-influxd.sh render it: loopback only, reporting off, everything under
its folder, and the same text from the Python renderer and the script."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from energymon_pipeline.influx.private_influxd import config_text

REPO = Path(__file__).resolve().parents[2]


def settings_of(text: str) -> list[tuple[str, str]]:
    return re.findall(r'^\s*([a-z-]+) = ("[^"]*"|\S+)$', text, re.MULTILINE)


@pytest.mark.parametrize("auth_enabled", [False, True])
def test_loopback_only_reporting_off_everything_under_root(tmp_path, auth_enabled):
    text = config_text(tmp_path, 18086, 18088, auth_enabled=auth_enabled)
    assert "$" not in text  # every placeholder filled in
    settings = settings_of(text)
    assert ("reporting-disabled", "true") in settings
    assert ("auth-enabled", "true" if auth_enabled else "false") in settings
    binds = [value.strip('"') for key, value in settings if key == "bind-address"]
    assert binds[:1] == ["127.0.0.1:18088"] and "127.0.0.1:18086" in binds
    assert all(bind.startswith("127.0.0.1:") for bind in binds)
    paths = [
        value.strip('"') for key, value in settings if key in ("dir", "wal-dir", "bind-socket")
    ]
    assert len(paths) == 4 and all(Path(p).parent == tmp_path for p in paths)


def test_the_script_renders_the_same_text(tmp_path):
    """scripts/local-influxd.sh fills in the same template (its TEMPLATE) with sed; a folder
    name with the characters sed treats specially comes out as it is."""
    root = tmp_path / "data & more|\\x" / "influxdb"
    rendered = tmp_path / "influxdb.conf"
    functions = r"""
        sed -n '/^TEMPLATE=/p;/^sed_text()/,/^}/p;/^write_config()/,/^}/p' \
            scripts/local-influxd.sh > "$1"
        source "$1"
        dir=$2 port=18086 conf=$3
        write_config 18088
    """
    subprocess.run(
        ["bash", "-c", functions, "-", str(tmp_path / "functions.sh"), str(root), str(rendered)],
        cwd=REPO, check=True, timeout=30,
    )  # fmt: skip
    assert rendered.read_text() == config_text(root, 18086, 18088)

"""The alert settings in the compose stack: an optional env file of their own read into the
code server (it holds the webhook URL and the SMTP password, so it is not the shared env
file, and git ignores it); the example file parses and names documented variables only."""

from __future__ import annotations

import re

from deployment_files import ROOT, load_compose

from energymon_pipeline.alerts.config import alert_settings

EXAMPLE = ROOT / "config" / "alerts.env.example"


def example_values() -> dict[str, str]:
    values = {}
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"#?([A-Z][A-Z0-9_]+)=(.*)", line.strip())
        if match:
            values[match[1]] = match[2]
    return values


def test_the_code_server_reads_the_optional_alerts_file():
    service = load_compose()["services"]["dagster-code"]
    assert service["env_file"] == [{"path": "config/alerts.env", "required": False}]
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "config/alerts.env" in ignored


def test_the_example_parses_and_is_documented():
    values = example_values()
    assert {"ENERGYMON_ALERT_WEBHOOK_URL", "ENERGYMON_SMTP_HOST", "ENERGYMON_SMTP_PASSWORD"} <= set(
        values
    )
    settings = alert_settings({**values, "ENERGYMON_SMTP_PASSWORD": "secret"})
    assert settings.channels == ("webhook", "email")
    assert (settings.down_after, settings.repeat_hours, settings.spool_minutes) == (3, 24, 15)
    reference = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", reference, flags=re.MULTILINE)
    assert set(values) <= set(rows)

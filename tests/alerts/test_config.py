"""ENERGYMON_ALERT_* and ENERGYMON_SMTP_*: defaults, and one line naming the variable for a
bad value (never echoing the webhook URL, which may hold a token); every variable the code
reads is documented once in docs/configuration.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from energymon_pipeline.alerts import config
from energymon_pipeline.alerts.config import alert_settings
from energymon_pipeline.errors import SettingsError

ROOT = Path(__file__).resolve().parents[2]
SMTP = {"ENERGYMON_SMTP_HOST": "mail.example.org", "ENERGYMON_SMTP_FROM": "a@example.org",
        "ENERGYMON_SMTP_TO": "b@example.org, c@example.org"}  # fmt: skip


def test_defaults():
    settings = alert_settings({})
    assert (settings.down_after, settings.repeat_hours, settings.degraded) == (3, 24, False)
    assert (settings.spool_minutes, settings.interval_s) == (15, 60)
    assert settings.webhook is None and settings.smtp is None and settings.channels == ()


def test_smtp_ports_follow_the_security_mode():
    assert alert_settings(SMTP).smtp.port == 587
    assert alert_settings({**SMTP, "ENERGYMON_SMTP_SECURITY": "TLS"}).smtp.port == 465
    assert alert_settings({**SMTP, "ENERGYMON_SMTP_SECURITY": "none"}).smtp.port == 25
    smtp = alert_settings({**SMTP, "ENERGYMON_SMTP_PORT": "2525"}).smtp
    assert smtp.port == 2525 and smtp.recipients == ("b@example.org", "c@example.org")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ENERGYMON_ALERT_DOWN_AFTER": "0"},
         "ENERGYMON_ALERT_DOWN_AFTER=0 is out of range; allowed: 1 to 10000"),
        ({"ENERGYMON_ALERT_HISTORY_DAYS": "0"},
         "ENERGYMON_ALERT_HISTORY_DAYS=0 is out of range; allowed: 1 to 36500"),
        ({"ENERGYMON_ALERT_REPEAT_HOURS": "daily"},
         "ENERGYMON_ALERT_REPEAT_HOURS='daily' is not an integer; allowed: a whole number "
         "from 0 to 8760"),
        ({"ENERGYMON_ALERT_DEGRADED": "maybe"},
         "ENERGYMON_ALERT_DEGRADED='maybe' is not a boolean; allowed: true or false"),
        ({"ENERGYMON_ALERT_WEBHOOK_URL": "hooks.example.org/T0KEN"},
         "ENERGYMON_ALERT_WEBHOOK_URL is not an http(s) URL; allowed: http://host/path or "
         "https://host/path"),
        ({**SMTP, "ENERGYMON_SMTP_TO": ""},
         "ENERGYMON_SMTP_TO='' is not set or not an e-mail address; allowed: name@domain "
         "(ENERGYMON_SMTP_TO: a comma-separated list); needed because ENERGYMON_SMTP_HOST is "
         "set"),
        ({**SMTP, "ENERGYMON_SMTP_PASSWORD": "pw"},
         "ENERGYMON_SMTP_PASSWORD is set but ENERGYMON_SMTP_USER is not"),
        ({**SMTP, "ENERGYMON_SMTP_CA_FILE": "/nonexistent/ca.pem"},
         "ENERGYMON_SMTP_CA_FILE='/nonexistent/ca.pem' is not a file; allowed: a PEM file of "
         "certificate authorities"),
    ],
)  # fmt: skip
def test_bad_values_are_one_line(env, message):
    with pytest.raises(SettingsError) as caught:
        alert_settings(env)
    assert str(caught.value) == message
    assert "T0KEN" not in str(caught.value)


def test_every_variable_is_documented_once():
    source = Path(config.__file__).read_text(encoding="utf-8")
    read = set(re.findall(r'"(ENERGYMON_(?:ALERT|SMTP)_[A-Z_]+)"', source))
    assert len(read) == 18, sorted(read)
    reference = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", reference, flags=re.MULTILINE)
    for name in read:
        assert rows.count(name) == 1, name

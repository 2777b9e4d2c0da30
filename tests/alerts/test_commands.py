"""`energymon alerts list [--json]` and `energymon alerts test` against the registry (SQLite
and PostgreSQL) and the loopback webhook receiver and SMTP server."""

from __future__ import annotations

import json

from conftest import SMTP_PASSWORD, TOKEN

from energymon_pipeline.alerts.config import alert_settings
from energymon_pipeline.alerts.evaluate import evaluate, senders
from energymon_pipeline.alerts.states import PollOutcome, update_states
from energymon_pipeline.registry import queries


def test_list_shows_states_and_history(migrated, energymon, clock, receiver):
    queries.add_meter(migrated, {"id": 4, "host": "10.0.0.4", "port": 502, "slave_address": 7,
                                 "type": "t", "description": "hall B"})  # fmt: skip
    empty = energymon("alerts", "list")
    assert empty.exit_code == 0 and "no meter states yet" in empty.stdout
    assert "no alerts raised" in empty.stdout
    for _ in range(3):
        update_states(migrated, [PollOutcome(4, "failed", "connection refused")],
                      clock.advance(minutes=1), 3)  # fmt: skip
    settings = alert_settings(
        {"ENERGYMON_ALERT_WEBHOOK_URL": receiver.url, "ENERGYMON_ALERT_WEBHOOK_RETRIES": "0"}
    )
    receiver.fail_next = 1
    evaluate(migrated, settings, clock(), senders(settings, lambda s: None))

    table = energymon("alerts", "list")
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["METER", "DESCRIPTION", "STATE", "SINCE", "FAILED", "POLLS",
                                "LAST", "GOOD", "READING", "LAST", "ERROR"]  # fmt: skip
    assert lines[1].split()[:4] == ["4", "hall", "B", "down"]
    assert "connection refused" in lines[1]
    [alert_line] = [line for line in lines if "meter_down" in line]
    assert "webhook queued (1 attempt(s): webhook: HTTP 503" in alert_line
    assert "hall B (10.0.0.4:502 unit 7) is down" in alert_line

    document = json.loads(energymon("alerts", "list", "--json").stdout)
    [state] = document["states"]
    assert (state["meter_id"], state["state"], state["failures"]) == (4, "down", 3)
    assert state["last_ok_at"] is None and state["since"] == clock().isoformat()
    [alert] = document["alerts"]
    assert alert["kind"] == "meter_down" and alert["meter_id"] == 4
    assert alert["meter_host"] == "10.0.0.4" and alert["meter_unit"] == 7
    assert alert["deliveries"]["webhook"]["status"] == "queued"
    assert TOKEN not in json.dumps(document)


def test_test_sends_on_each_channel(energymon, receiver, mailbox, monkeypatch):
    monkeypatch.setenv("ENERGYMON_ALERT_WEBHOOK_URL", receiver.url)
    for name, value in mailbox.env().items():
        monkeypatch.setenv(name, value)
    result = energymon("alerts", "test")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "webhook: sent (1 attempt(s))",
        f"e-mail: sent through 127.0.0.1:{mailbox.port} (starttls) to ops@example.org, "
        "oncall@example.org",
    ]
    assert receiver.kinds() == ["test"] and len(mailbox.messages) == 1


def test_test_says_what_failed_without_secrets(energymon, receiver, mailbox, monkeypatch):
    receiver.fail_next = 10
    monkeypatch.setenv("ENERGYMON_ALERT_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("ENERGYMON_ALERT_WEBHOOK_RETRIES", "0")
    for name, value in {**mailbox.env(), "ENERGYMON_SMTP_PASSWORD": "not-it"}.items():
        monkeypatch.setenv(name, value)
    result = energymon("alerts", "test")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: webhook: HTTP 503 Service Unavailable (after 1 attempt(s))",
        f"error: e-mail: 127.0.0.1:{mailbox.port} refused the login of 'alerts@example.org': 535",
    ]
    assert TOKEN not in result.stderr and SMTP_PASSWORD not in result.stderr


def test_test_without_a_channel_or_with_a_bad_setting(energymon, monkeypatch):
    for name in ("ENERGYMON_ALERT_WEBHOOK_URL", "ENERGYMON_SMTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    result = energymon("alerts", "test")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no alert channel is configured; set ")
    monkeypatch.setenv("ENERGYMON_ALERT_WEBHOOK_URL", f"ftp://example.org/{TOKEN}")
    result = energymon("alerts", "test")
    assert result.stderr == (
        "error: ENERGYMON_ALERT_WEBHOOK_URL is not an http(s) URL; allowed: "
        "http://host/path or https://host/path\n"
    )
    monkeypatch.setenv("ENERGYMON_ALERT_WEBHOOK_URL", "http://127.0.0.1/x")
    monkeypatch.setenv("ENERGYMON_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("ENERGYMON_SMTP_SECURITY", "ssl")
    result = energymon("alerts", "test")
    assert result.stderr == (
        "error: ENERGYMON_SMTP_SECURITY='ssl' is not a security mode; allowed: starttls, "
        "tls, none\n"
    )

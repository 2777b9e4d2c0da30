"""Webhook and e-mail delivery against real receivers on loopback: what arrives, the retries
with backoff, and one-line errors that never hold the URL's token or the password."""

from __future__ import annotations

import email
import email.policy
import json

import pytest
from conftest import SMTP_PASSWORD, SMTP_USER, TOKEN

from energymon_pipeline.alerts.config import alert_settings
from energymon_pipeline.alerts.delivery import (
    DeliveryError,
    Notification,
    send_email,
    send_webhook,
)

NOTE = Notification(
    kind="meter_down",
    text="meter 7 Hall A (127.0.0.1:5020 unit 1) is down",
    raised_at="2026-12-01T08:00:00+00:00",
    reason="timeout",
    meter={"id": 7, "description": "Hall A", "host": "127.0.0.1", "unit": 1},
    alert_id=3,
)


def webhook(url: str, **extra: str):
    return alert_settings({"ENERGYMON_ALERT_WEBHOOK_URL": url, **extra}).webhook


def test_webhook_posts_text_and_fields(receiver):
    pauses: list[float] = []
    assert send_webhook(webhook(receiver.url), NOTE, pauses.append) == 1
    [document] = receiver.received
    assert document["text"] == NOTE.text
    assert document["kind"] == "meter_down" and document["meter"]["id"] == 7
    assert document["reason"] == "timeout" and document["alert_id"] == 3
    assert pauses == []


def test_webhook_retries_with_backoff(receiver):
    receiver.fail_next = 2
    pauses: list[float] = []
    assert send_webhook(webhook(receiver.url), NOTE, pauses.append) == 3
    assert pauses == [1.0, 2.0] and receiver.attempts == 3 and len(receiver.received) == 1


def test_webhook_gives_up_with_one_line_and_no_token(receiver):
    receiver.fail_next = 10
    pauses: list[float] = []
    settings = webhook(receiver.url, ENERGYMON_ALERT_WEBHOOK_RETRIES="1")
    with pytest.raises(DeliveryError) as caught:
        send_webhook(settings, NOTE, pauses.append)
    assert str(caught.value) == "webhook: HTTP 503 Service Unavailable (after 2 attempt(s))"
    assert receiver.attempts == 2 and pauses == [1.0]
    assert TOKEN not in repr(settings)


def test_webhook_client_error_is_not_retried(receiver):
    settings = webhook(f"http://127.0.0.1:{receiver.port}/wrong/{TOKEN}")
    with pytest.raises(DeliveryError, match="HTTP 404") as caught:
        send_webhook(settings, NOTE, lambda s: None)
    assert receiver.attempts == 1 and TOKEN not in str(caught.value)


def test_webhook_unreachable(refused_port):
    settings = webhook(
        f"http://127.0.0.1:{refused_port}/x/{TOKEN}", ENERGYMON_ALERT_WEBHOOK_RETRIES="0"
    )
    with pytest.raises(DeliveryError, match="connection refused") as caught:
        send_webhook(settings, NOTE, lambda s: None)
    assert TOKEN not in str(caught.value)


def test_webhook_timeout(silent_port):
    settings = webhook(
        f"http://127.0.0.1:{silent_port}/x",
        ENERGYMON_ALERT_WEBHOOK_RETRIES="0",
        ENERGYMON_ALERT_WEBHOOK_TIMEOUT_S="1",
    )
    with pytest.raises(DeliveryError, match="no answer"):
        send_webhook(settings, NOTE, lambda s: None)


def test_email_over_starttls_with_login(mailbox):
    settings = alert_settings(mailbox.env()).smtp
    assert send_email(settings, NOTE) is None
    [envelope] = mailbox.messages
    assert mailbox.logins == [SMTP_USER]
    assert envelope.rcpt_tos == ["ops@example.org", "oncall@example.org"]
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert message["Subject"] == f"[energymon] {NOTE.text}"
    body = message.get_content()
    assert NOTE.text in body and "reason: timeout" in body
    assert json.loads(body.split("meter: ", 1)[1].splitlines()[0])["id"] == 7


def test_email_wrong_password_is_one_line_without_it(mailbox):
    env = {**mailbox.env(), "ENERGYMON_SMTP_PASSWORD": "wrong-password"}
    with pytest.raises(DeliveryError) as caught:
        send_email(alert_settings(env).smtp, NOTE)
    assert "refused the login" in str(caught.value) and "wrong-password" not in str(caught.value)
    assert SMTP_PASSWORD not in str(caught.value) and not mailbox.messages


def test_email_untrusted_certificate(mailbox):
    env = {**mailbox.env(), "ENERGYMON_SMTP_CA_FILE": ""}
    with pytest.raises(DeliveryError, match="TLS with 127.0.0.1"):
        send_email(alert_settings(env).smtp, NOTE)
    assert not mailbox.messages


def test_email_server_unreachable(refused_port):
    env = {"ENERGYMON_SMTP_HOST": "127.0.0.1", "ENERGYMON_SMTP_PORT": str(refused_port),
           "ENERGYMON_SMTP_SECURITY": "none", "ENERGYMON_SMTP_FROM": "a@example.org",
           "ENERGYMON_SMTP_TO": "b@example.org"}  # fmt: skip
    with pytest.raises(DeliveryError, match=f"cannot send through 127.0.0.1:{refused_port}"):
        send_email(alert_settings(env).smtp, NOTE)

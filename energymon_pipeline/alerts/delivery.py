"""Sending one alert on one channel: a webhook POST of JSON, or an e-mail over SMTP.

A send either succeeds or raises DeliveryError with one line saying what went wrong; the
line never holds the webhook URL (it may carry a token) nor the SMTP password, because it is
stored in the outbox, logged and shown in the sensor's tick.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from energymon_pipeline.alerts.config import SmtpSettings, WebhookSettings
from energymon_pipeline.errors import EnergymonError

#: The first pause between webhook attempts; doubled after each.
BACKOFF_S = 1.0
USER_AGENT = "energymon-alerts"


class DeliveryError(EnergymonError):
    """A channel did not take a notification."""


@dataclass(frozen=True)
class Notification:
    """What every channel sends: the text a person reads and the fields a program reads."""

    kind: str
    text: str
    raised_at: str
    reason: str | None = None
    meter: dict[str, Any] | None = None
    alert_id: int | None = None

    def document(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "kind": self.kind,
            "meter": self.meter,
            "reason": self.reason,
            "raised_at": self.raised_at,
            "alert_id": self.alert_id,
            "source": "energymon",
        }

    @property
    def subject(self) -> str:
        return f"[energymon] {self.text.splitlines()[0]}"[:200]


def send_webhook(
    settings: WebhookSettings,
    notification: Notification,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """POSTs the notification; retries `settings.retries` times with a doubling pause after a
    connection failure, a timeout or a 5xx/429 answer. Returns the attempts it took."""
    body = json.dumps(notification.document()).encode()
    attempts = settings.retries + 1
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(
            settings.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
        )
        try:
            with urllib.request.urlopen(request, timeout=settings.timeout_s) as response:
                response.read()
            return attempt
        except urllib.error.HTTPError as error:
            reason = f"HTTP {error.code} {error.reason}"
            retry = error.code >= 500 or error.code == 429
        except urllib.error.URLError as error:
            reason, retry = _network_reason(error.reason), True
        except TimeoutError:
            reason, retry = f"no answer within {settings.timeout_s} s", True
        except (OSError, ValueError) as error:
            reason, retry = _network_reason(error), True
        if not retry or attempt == attempts:
            raise DeliveryError(f"webhook: {reason} (after {attempt} attempt(s))")
        sleep(BACKOFF_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _network_reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "no answer in time"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


def email_message(settings: SmtpSettings, notification: Notification) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = notification.subject
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    lines = [notification.text, ""]
    for key, value in notification.document().items():
        if key != "text" and value is not None:
            lines.append(f"{key}: {json.dumps(value) if isinstance(value, dict) else value}")
    message.set_content("\n".join(lines) + "\n")
    return message


def send_email(settings: SmtpSettings, notification: Notification) -> str | None:
    """Sends the notification to every recipient over SMTP (STARTTLS, TLS or plain, as set);
    logs in when a user is set. When the server took it for some recipients but not all, it
    counts as sent (sending again would repeat it to the others): the refused ones are
    returned as a note."""
    context = ssl.create_default_context(cafile=settings.ca_file)
    where = f"{settings.host}:{settings.port}"
    try:
        if settings.security == "tls":
            client = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout_s, context=context
            )
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s)
        with client:
            if settings.security == "starttls":
                client.starttls(context=context)
            if settings.user:
                client.login(settings.user, settings.password or "")
            refused = client.send_message(email_message(settings, notification))
    except smtplib.SMTPAuthenticationError as error:
        raise DeliveryError(
            f"e-mail: {where} refused the login of {settings.user!r}: {error.smtp_code}"
        ) from None
    except smtplib.SMTPNotSupportedError as error:
        raise DeliveryError(f"e-mail: {where}: {error}") from None
    except smtplib.SMTPResponseException as error:
        text = error.smtp_error.decode(errors="replace") if error.smtp_error else ""
        raise DeliveryError(f"e-mail: {where} answered {error.smtp_code} {text}") from None
    except smtplib.SMTPRecipientsRefused as error:
        raise DeliveryError(
            f"e-mail: {where} refused every recipient: {', '.join(error.recipients)}"
        ) from None
    except ssl.SSLError as error:
        raise DeliveryError(f"e-mail: TLS with {where} failed: {error.reason or error}") from None
    except (smtplib.SMTPException, OSError) as error:
        reason = _network_reason(error) if isinstance(error, OSError) else str(error)
        raise DeliveryError(f"e-mail: cannot send through {where}: {reason}") from None
    if refused:
        return f"{where} refused recipient(s) {', '.join(sorted(refused))}"
    return None

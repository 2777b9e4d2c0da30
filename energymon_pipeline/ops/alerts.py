"""The alerts in Dagster: the resource holding their settings (secrets as dg.EnvVar), the
poll's state update, `meter_alert_sensor` and `poll_failure_sensor`.

What the alerts are and how they are sent is energymon_pipeline/alerts/ (no dagster there);
this module only wires it to runs and sensor ticks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg
from sqlalchemy.exc import SQLAlchemyError

from energymon_pipeline.alerts.config import (
    SMTP_PASSWORD,
    WEBHOOK_URL,
    AlertSettings,
    alert_settings,
)
from energymon_pipeline.alerts.evaluate import evaluate, raise_poll_failure, senders
from energymon_pipeline.alerts.outbox import deliver
from energymon_pipeline.alerts.states import outcome_of, update_states
from energymon_pipeline.errors import EnergymonError
from energymon_pipeline.modbus.reader import MeterResult
from energymon_pipeline.resources import InfluxResource, RegistryResource

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class AlertsResource(dg.ConfigurableResource):
    """The ENERGYMON_ALERT_* and ENERGYMON_SMTP_* settings. The webhook URL (it may hold a
    token) and the SMTP password come as dg.EnvVar: the UI shows the variables' names."""

    down_after: int = 3
    repeat_hours: int = 24
    degraded: bool = False
    spool_minutes: int = 15
    webhook_url: str = ""
    webhook_timeout_s: int = 10
    webhook_retries: int = 2
    smtp_host: str = ""
    smtp_port: int = 0
    smtp_security: str = "starttls"
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_from: str = ""
    smtp_to: str = ""
    smtp_timeout_s: int = 10
    smtp_ca_file: str = ""

    @classmethod
    def of(cls, settings: AlertSettings) -> AlertsResource:
        """The resource for `settings` (alerts.config.alert_settings, read at load)."""
        smtp = settings.smtp
        webhook = settings.webhook
        return cls(
            down_after=settings.down_after,
            repeat_hours=settings.repeat_hours,
            degraded=settings.degraded,
            spool_minutes=settings.spool_minutes,
            webhook_url=dg.EnvVar(WEBHOOK_URL) if webhook else "",
            webhook_timeout_s=webhook.timeout_s if webhook else 10,
            webhook_retries=webhook.retries if webhook else 2,
            smtp_host=smtp.host if smtp else "",
            smtp_port=smtp.port if smtp else 0,
            smtp_security=smtp.security if smtp else "starttls",
            smtp_user=(smtp.user or "") if smtp else "",
            smtp_password=dg.EnvVar(SMTP_PASSWORD) if smtp and smtp.password else "",
            smtp_from=smtp.sender if smtp else "",
            smtp_to=",".join(smtp.recipients) if smtp else "",
            smtp_timeout_s=smtp.timeout_s if smtp else 10,
            smtp_ca_file=(smtp.ca_file or "") if smtp else "",
        )

    def settings(self) -> AlertSettings:
        """Read back through alerts.config, so a value is checked the same way wherever it
        came from."""
        env = {
            "ENERGYMON_ALERT_DOWN_AFTER": str(self.down_after),
            "ENERGYMON_ALERT_REPEAT_HOURS": str(self.repeat_hours),
            "ENERGYMON_ALERT_DEGRADED": str(self.degraded),
            "ENERGYMON_ALERT_SPOOL_MINUTES": str(self.spool_minutes),
            WEBHOOK_URL: self.webhook_url,
            "ENERGYMON_ALERT_WEBHOOK_TIMEOUT_S": str(self.webhook_timeout_s),
            "ENERGYMON_ALERT_WEBHOOK_RETRIES": str(self.webhook_retries),
            "ENERGYMON_SMTP_HOST": self.smtp_host,
            "ENERGYMON_SMTP_PORT": str(self.smtp_port or ""),
            "ENERGYMON_SMTP_SECURITY": self.smtp_security,
            "ENERGYMON_SMTP_USER": self.smtp_user,
            SMTP_PASSWORD: self.smtp_password,
            "ENERGYMON_SMTP_FROM": self.smtp_from,
            "ENERGYMON_SMTP_TO": self.smtp_to,
            "ENERGYMON_SMTP_TIMEOUT_S": str(self.smtp_timeout_s),
            "ENERGYMON_SMTP_CA_FILE": self.smtp_ca_file,
        }
        return alert_settings(env)


def record_meter_states(
    context: dg.OpExecutionContext,
    registry: RegistryResource,
    down_after: int,
    results: list[MeterResult],
) -> dict[str, float]:
    """After the read: each meter's state, one statement for all. The readings matter more:
    a registry that cannot take the states costs a warning, never the run. Returns how long
    it took, for the op's metadata (a log line would be one more event row every run)."""
    if not results:
        return {}
    started = time.perf_counter()
    try:
        updated = update_states(registry.engine(), map(outcome_of, results), utc_now(), down_after)
    except (EnergymonError, SQLAlchemyError) as error:
        context.log.warning(f"meter states not recorded: {error}")
        return {}
    return {
        "meter states recorded": updated,
        "meter states (ms)": round(1000 * (time.perf_counter() - started), 1),
    }


def _spool_age_s(influx: InfluxResource) -> float | None:
    ages = [s.oldest_age_s for _, s in influx.write_path().status() if s.oldest_age_s is not None]
    return max(ages) if ages else None


def build_meter_alert_sensor(
    interval_s: int, clock: Clock = utc_now, sleep: Callable[[float], None] = time.sleep
) -> dg.SensorDefinition:
    """`clock` and `sleep` are the tests' (a clock they move, no real backoff pauses)."""

    @dg.sensor(
        name="meter_alert_sensor",
        minimum_interval_seconds=max(5, int(interval_s)),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Raises meter-down, recovery, reminder and spool-backlog alerts from the "
        "meters' states and sends what is queued by webhook and e-mail.",
    )
    def meter_alert_sensor(
        context: dg.SensorEvaluationContext,
        registry: RegistryResource,
        alerts: AlertsResource,
        influx: InfluxResource,
    ):
        settings = alerts.settings()
        now = clock()
        evaluation = evaluate(
            registry.engine(),
            settings,
            now,
            senders(settings, sleep),
            spool_age_s=_spool_age_s(influx),
            spool_checked=True,
        )
        for line in evaluation.lines():
            context.log.info(line)
        context.update_cursor(
            json.dumps(
                {
                    "evaluated_at": now.isoformat(),
                    "states": dict(evaluation.states),
                    "raised": len(evaluation.raised),
                    "sent": len(evaluation.delivery.sent),
                    "not_sent": len(evaluation.delivery.failed),
                    "queued": evaluation.delivery.waiting,
                },
                sort_keys=True,
            )
        )
        channels = ", ".join(settings.channels) or "no channel configured"
        return dg.SkipReason(f"{evaluation.summary()} ({channels})")

    return meter_alert_sensor


def _failure_reason(context: dg.RunFailureSensorContext) -> str:
    for event in context.get_step_failure_events():
        error = event.event_specific_data and event.event_specific_data.error
        if error is not None:
            return error.message.strip().splitlines()[0]
    return (context.failure_event.message or "the run failed").strip().splitlines()[0]


def build_poll_failure_sensor(
    poll_job: dg.JobDefinition, clock: Clock = utc_now, sleep: Callable[[float], None] = time.sleep
) -> dg.SensorDefinition:
    # schedules.py imports the poll ops, which import this module: its names are taken here.
    from energymon_pipeline.schedules import ALL_METERS, GROUP_TAG

    @dg.run_failure_sensor(
        name="poll_failure_sensor",
        monitored_jobs=[poll_job],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Raises an alert when a poll run fails (every meter failed, or the run "
        "crashed): once, until a poll run of the same group succeeds or the repeat interval "
        "passes.",
    )
    def poll_failure_sensor(
        context: dg.RunFailureSensorContext, registry: RegistryResource, alerts: AlertsResource
    ):
        run = context.dagster_run
        group = run.tags.get(GROUP_TAG, ALL_METERS)
        settings = alerts.settings()
        now = clock()

        def succeeded_after(announced_run_id: str) -> bool:
            """Whether a poll run of the group succeeded after the announced failed run
            ended (the runs' own times, from the instance)."""
            announced = context.instance.get_run_record_by_id(announced_run_id)
            if announced is None:  # purged by the retention job: long ago
                return True
            records = context.instance.get_run_records(
                dg.RunsFilter(
                    job_name=run.job_name,
                    statuses=[dg.DagsterRunStatus.SUCCESS],
                    tags={GROUP_TAG: group} if GROUP_TAG in run.tags else {},
                    updated_after=announced.end_time
                    and datetime.fromtimestamp(announced.end_time, UTC),
                ),
                limit=1,
            )
            return bool(records)

        text = raise_poll_failure(
            registry.engine(),
            settings,
            now,
            run.run_id,
            group,
            _failure_reason(context),
            succeeded_after,
        )
        if text is None:
            context.log.info(
                f"run {run.run_id} failed; not announced again: the last failure of poll "
                f"group {group!r} was announced and no poll run succeeded since"
            )
        else:
            context.log.info(f"raised: {text}")
        for line in deliver(registry.engine(), senders(settings, sleep), now).lines():
            context.log.info(line)

    return poll_failure_sensor

"""The failure alert: a run-failure sensor that posts to HATCH_ALERT_WEBHOOK which days of which sources failed,
and why. Defined only when the webhook is set, so a deployment without one shows no idle sensor."""

from __future__ import annotations

import os

import dagster as dg
from dagster_shared.error import SerializableErrorInfo

from hatch_pipeline.alerts import FailedRun, alert_text, post_alert
from hatch_pipeline.defs.constants import (
    ALERT_SENSOR_NAME,
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    PARTITION_TAG,
)
from hatch_pipeline.settings import Settings


def tagged_days(tags: dict[str, str]) -> str | None:
    """The run's days as its tags name them: a range run's first..last, or its one partition."""
    start, end = tags.get(PARTITION_RANGE_START_TAG), tags.get(PARTITION_RANGE_END_TAG)
    if start and end:
        return start if start == end else f"{start}..{end}"
    return tags.get(PARTITION_TAG)


def root_cause(error: SerializableErrorInfo) -> str:
    """The innermost error's message: Dagster wraps a step's exception in "Error occurred while executing op"."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def failed_run(context: dg.RunFailureSensorContext) -> FailedRun:
    run = context.dagster_run
    failures = [(str(event.step_key), event.step_failure_data.error) for event in context.get_step_failure_events()]
    causes = [f"{step}: {root_cause(error)}" for step, error in failures if error is not None]
    # A run of an asset job names its assets; an ad-hoc one, only the failed steps (one per asset: hatch__raw__S).
    assets = [key.to_user_string() for key in run.asset_selection or ()] or [step for step, _ in failures]
    return FailedRun(
        run_id=run.run_id,
        job=run.job_name,
        assets=sorted(assets),
        days=tagged_days(dict(run.tags)),
        causes=causes or ([context.failure_event.message] if context.failure_event.message else []),
    )


def failure_alert_sensor(settings: Settings) -> dg.SensorDefinition | None:
    """The alert sensor, running by default, or None when HATCH_ALERT_WEBHOOK is unset."""
    webhook = settings.alert_webhook
    if webhook is None:
        return None

    @dg.run_failure_sensor(
        name=ALERT_SENSOR_NAME,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts each failed run (its days, sources and causes) to HATCH_ALERT_WEBHOOK; never the API key.",
    )
    def hatch_failure_alert(context: dg.RunFailureSensorContext) -> None:
        post_alert(webhook, alert_text(failed_run(context), secrets=[os.environ.get("HATCH_API_KEY", "")]))

    return hatch_failure_alert

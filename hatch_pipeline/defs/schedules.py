"""The two schedules, on by default: each morning one range run refetches the last days of every hatch asset
(`daily_schedule`), and at HATCH_FRESH_BY one run of every check judges them (`checks_schedule`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg

from hatch_pipeline.contract import DATA_SOURCES, ExportWindow
from hatch_pipeline.defs.constants import AS_OF_TAG, CHECKS_SCHEDULE_NAME, REFETCH_TAG, SCHEDULE_NAME, source_keys
from hatch_pipeline.defs.partitions import range_tags
from hatch_pipeline.settings import Settings, SettingsError


def lookback_window(tick: datetime, settings: Settings) -> ExportWindow | None:
    """The days a tick refetches: yesterday (in HATCH_TIMEZONE) and HATCH_LOOKBACK_DAYS days before it, never
    before the first partition; None when yesterday itself precedes it."""
    yesterday = tick.astimezone(settings.zone).date() - timedelta(days=1)
    start = max(yesterday - timedelta(days=settings.lookback_days), settings.first_partition_day)
    return ExportWindow(start, yesterday) if start <= yesterday else None


def daily_schedule(settings: Settings, job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """At HATCH_SCHEDULE_CRON in HATCH_TIMEZONE, one range run refetches the lookback window of every hatch asset
    (normally one export per source). On by default, since daily arrival is the point."""

    def hatch_daily_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        tick = context.scheduled_execution_time
        window = lookback_window(tick, settings)
        if window is None:
            return dg.SkipReason(f"yesterday precedes the first partition {settings.first_partition_day}")
        return dg.RunRequest(
            run_key=f"{SCHEDULE_NAME}:{tick.isoformat()}",
            asset_selection=source_keys(DATA_SOURCES),
            tags={**range_tags(window), REFETCH_TAG: "true"},
        )

    try:
        return _running_schedule(
            SCHEDULE_NAME,
            settings.schedule_cron,
            settings,
            job,
            hatch_daily_schedule,
            f"Refetches yesterday and the {settings.lookback_days} day(s) before it as one range run "
            f"(run tag {REFETCH_TAG}=true): late corrections by the vendor replace what was landed.",
        )
    except dg.DagsterInvalidDefinitionError as error:
        raise SettingsError(
            f"HATCH_SCHEDULE_CRON={settings.schedule_cron!r} is not a valid cron string ({error}); use e.g. '0 6 * * *'"
        ) from None


def checks_schedule(settings: Settings, job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """At HATCH_FRESH_BY in HATCH_TIMEZONE, one run of every check, judging freshness at the tick. On by default:
    a missing yesterday or a tampered table turns red without anyone clicking."""
    fresh_by = settings.fresh_by_time

    def hatch_checks_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        tick = context.scheduled_execution_time or datetime.now(UTC)
        return dg.RunRequest(run_key=f"{CHECKS_SCHEDULE_NAME}:{tick.isoformat()}", tags={AS_OF_TAG: tick.isoformat()})

    return _running_schedule(
        CHECKS_SCHEDULE_NAME,
        f"{fresh_by.minute} {fresh_by.hour} * * *",
        settings,
        job,
        hatch_checks_schedule,
        f"Runs every hatch check at {settings.fresh_by} {settings.timezone} (HATCH_FRESH_BY): whether "
        "yesterday landed, and the reconciliation of every stored day.",
    )


def _running_schedule(
    name: str,
    cron: str,
    settings: Settings,
    job: dg.UnresolvedAssetJobDefinition,
    execution_fn: Callable[[dg.ScheduleEvaluationContext], dg.RunRequest | dg.SkipReason],
    description: str,
) -> dg.ScheduleDefinition:
    """A schedule at `cron` in HATCH_TIMEZONE, on by default: daily arrival, and checks that turn red unattended,
    are the point."""
    return dg.ScheduleDefinition(
        name=name,
        cron_schedule=cron,
        execution_timezone=settings.timezone,
        job=job,
        execution_fn=execution_fn,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )

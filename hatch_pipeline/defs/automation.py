"""Partitions, the daily job and its schedule (each morning one range run refetches the last days, unattended), and
the automation sensor that carries a raw materialization on to Parquet and BigQuery."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import dagster as dg

from hatch_pipeline.contract import DATA_SOURCES, ExportWindow
from hatch_pipeline.defs.assets import GROUP, REFETCH_TAG, source_keys
from hatch_pipeline.settings import Settings, SettingsError

PARTITION_RANGE_START_TAG: Final = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG: Final = "dagster/asset_partition_range_end"
"""Dagster's run tags for a partition range materialized as one run (its own constants are private)."""
SCHEDULE_NAME: Final = "hatch_daily_schedule"
AUTOMATION_SENSOR_NAME: Final = "hatch_automation"
DAILY_JOB_NAME: Final = "hatch_daily"


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """One partition per day in HATCH_TIMEZONE from a fixed first day (HATCH_FIRST_PARTITION), the newest being
    yesterday (the newest day the vendor serves). Nothing here reads the clock: a reload never drops landed days."""
    return dg.DailyPartitionsDefinition(
        start_date=settings.first_partition_day.isoformat(), timezone=settings.timezone, end_offset=0
    )


def daily_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        DAILY_JOB_NAME,
        selection=dg.AssetSelection.groups(GROUP),
        description="Every hatch asset of one day (or a range): export, Parquet, BigQuery.",
    )


def lookback_window(tick: datetime, settings: Settings) -> ExportWindow | None:
    """The days a tick refetches: yesterday (in HATCH_TIMEZONE) and HATCH_LOOKBACK_DAYS days before it, never
    before the first partition; None when yesterday itself precedes it."""
    yesterday = tick.astimezone(settings.zone).date() - timedelta(days=1)
    start = max(yesterday - timedelta(days=settings.lookback_days), settings.first_partition_day)
    return ExportWindow(start, yesterday) if start <= yesterday else None


def range_tags(window: ExportWindow) -> dict[str, str]:
    """The tags that make one run materialize the window's partitions together."""
    return {PARTITION_RANGE_START_TAG: window.start.isoformat(), PARTITION_RANGE_END_TAG: window.end.isoformat()}


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
        return dg.ScheduleDefinition(
            name=SCHEDULE_NAME,
            cron_schedule=settings.schedule_cron,
            execution_timezone=settings.timezone,
            job=job,
            execution_fn=hatch_daily_schedule,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description=(
                f"Refetches yesterday and the {settings.lookback_days} day(s) before it as one range run "
                f"(run tag {REFETCH_TAG}=true): late corrections by the vendor replace what was landed."
            ),
        )
    except dg.DagsterInvalidDefinitionError as error:
        raise SettingsError(
            f"HATCH_SCHEDULE_CRON={settings.schedule_cron!r} is not a valid cron string ({error}); use e.g. '0 6 * * *'"
        ) from None


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Evaluates the hatch assets' automation conditions (conditions.py) every 30 s; on by default, since Dagster's
    own automation sensor starts stopped. A tick that requests several days becomes a backfill (emit_backfills),
    which follows the assets' BackfillPolicy.single_run(): one run per contiguous range, as a UI backfill does."""
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR_NAME,
        target=dg.AssetSelection.groups(GROUP),
        default_status=dg.DefaultSensorStatus.RUNNING,
        emit_backfills=True,
        description=(
            "Materializes hatch/parquet/S and hatch/bigquery/S for the days a run of hatch/raw/S alone landed "
            "(e.g. from the UI), once nothing upstream is missing, running or red on a blocking check. Never "
            "requests raw exports."
        ),
    )

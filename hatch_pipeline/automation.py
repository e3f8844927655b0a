"""Partitions, the daily job and its schedule: yesterday's data arrives every morning without anyone clicking."""

from __future__ import annotations

from typing import Final

import dagster as dg

from hatch_pipeline.assets import GROUP
from hatch_pipeline.settings import Settings

DAILY_RUN_HOUR: Final = 6
"""The vendor refreshes nightly with the previous day; 06:00 in HATCH_TIMEZONE leaves it time to finish."""


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """One partition per day in HATCH_TIMEZONE from a fixed first day (HATCH_FIRST_PARTITION), the newest being
    yesterday (the newest day the vendor serves). Nothing here reads the clock: a reload never drops landed days."""
    return dg.DailyPartitionsDefinition(
        start_date=settings.first_partition_day.isoformat(), timezone=settings.timezone, end_offset=0
    )


def daily_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        "hatch_daily",
        selection=dg.AssetSelection.groups(GROUP),
        description="Every hatch asset of one day (or a range): export, Parquet, BigQuery.",
    )


def daily_schedule(
    job: dg.UnresolvedAssetJobDefinition,
) -> dg.ScheduleDefinition | dg.UnresolvedPartitionedAssetScheduleDefinition:
    """Runs yesterday's partition each morning; on by default, since daily arrival is the point."""
    return dg.build_schedule_from_partitioned_job(
        job, hour_of_day=DAILY_RUN_HOUR, default_status=dg.DefaultScheduleStatus.RUNNING
    )

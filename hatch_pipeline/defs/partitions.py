"""The daily partitions of every hatch asset, and the run tags that make one run materialize a range of them."""

from __future__ import annotations

import dagster as dg

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.defs.constants import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from hatch_pipeline.settings import Settings


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """One partition per day in HATCH_TIMEZONE from a fixed first day (HATCH_FIRST_PARTITION), the newest being
    yesterday (the newest day the vendor serves). Nothing here reads the clock: a reload never drops landed days."""
    return dg.DailyPartitionsDefinition(
        start_date=settings.first_partition_day.isoformat(), timezone=settings.timezone, end_offset=0
    )


def range_tags(window: ExportWindow) -> dict[str, str]:
    """The tags that make one run materialize the window's partitions together."""
    return {PARTITION_RANGE_START_TAG: window.start.isoformat(), PARTITION_RANGE_END_TAG: window.end.isoformat()}

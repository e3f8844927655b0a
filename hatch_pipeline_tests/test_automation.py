"""The partition set and the daily schedule, evaluated on a pinned clock: never the real date."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import dagster as dg

from hatch_pipeline.assets import build_source_assets
from hatch_pipeline.automation import daily_job, daily_partitions, daily_schedule
from hatch_pipeline.resources import pipeline_resources
from hatch_pipeline.settings import Settings

ZONE: Final = "America/Los_Angeles"
MORNING: Final = datetime(2026, 11, 26, 6, 0, tzinfo=ZoneInfo(ZONE))
"""The injected clock: the schedule's tick and Dagster's "now" for the partition set."""
YESTERDAY: Final = (MORNING - timedelta(days=1)).date()


def test_a_reload_on_another_day_keeps_every_partition() -> None:
    """The first partition is fixed: a reload months later only adds days, so no landed day leaves the set."""
    settings = Settings.from_env({"HATCH_TIMEZONE": ZONE})
    later = MORNING + timedelta(days=200)

    before = daily_partitions(settings).get_partition_keys(current_time=MORNING)
    after = daily_partitions(settings).get_partition_keys(current_time=later)

    assert before[0] == after[0] == "2026-06-01"
    assert after[: len(before)] == before
    assert (before[-1], after[-1]) == (YESTERDAY.isoformat(), (later - timedelta(days=1)).date().isoformat())


def test_the_morning_run_targets_yesterday_in_the_configured_zone() -> None:
    settings = Settings(timezone=ZONE, first_partition=(YESTERDAY - timedelta(days=30)).isoformat())
    job = daily_job()
    defs = dg.Definitions(
        assets=build_source_assets("contact_history", daily_partitions(settings)),
        jobs=[job],
        schedules=[daily_schedule(job)],
        resources=pipeline_resources(settings),
    )
    schedule = defs.get_repository_def().get_schedule_def("hatch_daily_schedule")

    with dg.build_schedule_context(scheduled_execution_time=MORNING) as context:
        [request] = schedule.evaluate_tick(context).run_requests or []

    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.execution_timezone == ZONE
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert request.partition_key == YESTERDAY.isoformat()

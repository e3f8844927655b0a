"""The daily schedule: each morning it asks for yesterday's partition of every hatch asset, in HATCH_TIMEZONE."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg

from hatch_pipeline.assets import build_source_assets
from hatch_pipeline.automation import daily_job, daily_partitions, daily_schedule
from hatch_pipeline.resources import pipeline_resources
from hatch_pipeline.settings import Settings


def test_the_morning_run_targets_yesterday_in_the_configured_zone() -> None:
    settings = Settings(timezone="America/Los_Angeles")
    job = daily_job()
    defs = dg.Definitions(
        assets=build_source_assets("contact_history", daily_partitions(settings)),
        jobs=[job],
        schedules=[daily_schedule(job)],
        resources=pipeline_resources(settings),
    )
    schedule = defs.get_repository_def().get_schedule_def("hatch_daily_schedule")
    morning = datetime(2026, 11, 26, 6, 0, tzinfo=ZoneInfo("America/Los_Angeles"))

    with dg.build_schedule_context(scheduled_execution_time=morning) as context:
        [request] = schedule.evaluate_tick(context).run_requests or []

    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.execution_timezone == "America/Los_Angeles"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert request.partition_key == "2026-11-25"

"""The partition set and the daily schedule, evaluated on a pinned clock (the end-to-end run excepted: the sandbox
serves days relative to the real date)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.defs.assets import build_source_assets
from hatch_pipeline.defs.constants import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from hatch_pipeline.defs.jobs import daily_job
from hatch_pipeline.defs.partitions import daily_partitions
from hatch_pipeline.defs.resources import pipeline_resources
from hatch_pipeline.defs.schedules import daily_schedule
from hatch_pipeline.settings import Settings, SettingsError
from hatch_pipeline_tests.support.pipeline_fixtures import ROWS_PER_DAY, SOURCES, Pipeline, without_load_time

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


def morning_request(settings: Settings, tick: datetime) -> dg.RunRequest:
    """What the project's daily schedule requests at `tick`, built as definitions.py builds it."""
    job = daily_job()
    defs = dg.Definitions(
        assets=source_assets(settings),
        jobs=[job],
        schedules=[daily_schedule(settings, job)],
        resources=pipeline_resources(settings),
    )
    schedule = defs.get_repository_def().get_schedule_def("hatch_daily_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == (settings.schedule_cron, settings.timezone)
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.build_schedule_context(scheduled_execution_time=tick) as context:
        [request] = schedule.evaluate_tick(context).run_requests or []
    return request


def source_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    partitions = daily_partitions(settings)
    return [asset for source in SOURCES for asset in build_source_assets(source, partitions)]


def test_each_morning_one_range_run_refetches_yesterday_and_the_lookback_days() -> None:
    settings = Settings.from_env({"HATCH_TIMEZONE": ZONE, "HATCH_LOOKBACK_DAYS": "3"})

    request = morning_request(settings, MORNING)

    assert request.tags == {
        "dagster/asset_partition_range_start": (YESTERDAY - timedelta(days=3)).isoformat(),
        "dagster/asset_partition_range_end": YESTERDAY.isoformat(),
        "hatch/refetch": "true",
        "dagster/schedule_name": "hatch_daily_schedule",
    }
    assert request.partition_key is None
    assert {key.to_user_string() for key in request.asset_selection or []} == {
        f"hatch/{stage}/{source}" for stage in ("raw", "parquet", "bigquery") for source in SOURCES
    }
    assert request.run_key is not None
    assert request.run_key != morning_request(settings, MORNING + timedelta(days=1)).run_key


def test_the_schedule_follows_the_configured_cron_and_never_reaches_before_the_first_partition() -> None:
    settings = Settings.from_env(
        {"HATCH_TIMEZONE": ZONE, "HATCH_SCHEDULE_CRON": "30 7 * * 1-5", "HATCH_FIRST_PARTITION": "2026-11-24"}
    )

    request = morning_request(settings, MORNING)

    assert (request.tags[PARTITION_RANGE_START_TAG], request.tags[PARTITION_RANGE_END_TAG]) == (
        "2026-11-24",
        YESTERDAY.isoformat(),
    )


def test_a_cron_string_dagster_refuses_names_the_variable() -> None:
    settings = Settings.from_env({"HATCH_SCHEDULE_CRON": "61 6 * * *"})

    with pytest.raises(SettingsError, match=r"HATCH_SCHEDULE_CRON='61 6 \* \* \*' is not a valid cron string"):
        daily_schedule(settings, daily_job())


def test_the_range_run_the_schedule_requests_exports_each_source_once_and_replaces_the_days(
    pipeline: Pipeline,
) -> None:
    """Days landed yesterday are exported again, once per source for the whole window, and replace the table's."""
    settings = Settings()
    now = datetime.now(UTC)  # the sandbox serves days relative to the real date; nothing asserts on it
    request = morning_request(settings, now)
    window = ExportWindow(
        date.fromisoformat(request.tags[PARTITION_RANGE_START_TAG]),
        date.fromisoformat(request.tags[PARTITION_RANGE_END_TAG]),
    )
    pipeline.materialize(window.start, window.end)
    landed = {source: pipeline.table(source) for source in SOURCES}

    result = pipeline.materialize(window.start, window.end, request.asset_selection, tags=request.tags)

    assert result.success
    assert pipeline.exports()[len(SOURCES) :] == [
        (source, str(window.start), str(window.end), 200) for source in SOURCES
    ]
    for source in SOURCES:
        table = pipeline.table(source)
        assert table.height == window.days * ROWS_PER_DAY
        assert without_load_time(table).equals(without_load_time(landed[source]))
        assert (table["_loaded_at"] > landed[source]["_loaded_at"].max()).all()

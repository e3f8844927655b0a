"""The catch-up sensor evaluated against a real Dagster instance whose days were landed by real runs (sandbox API,
GCS and BigQuery emulators), and the run it requests executed as the daemon would launch it. Days are counted
back from the real yesterday: the sandbox serves days relative to the real date."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from datetime import date, timedelta

import dagster as dg
import pytest

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.defs import build_definitions
from hatch_pipeline.defs.constants import (
    DAILY_JOB_NAME,
    RUN_KEY_TAG,
    SCHEDULE_NAME,
    SCHEDULE_NAME_TAG,
    SENSOR_NAME,
    source_keys,
)
from hatch_pipeline.defs.partitions import range_tags
from hatch_pipeline.defs.resources import pipeline_resources
from hatch_pipeline.defs.sensors import INTERVAL_SECONDS
from hatch_pipeline.local.sandbox.server import Fault
from hatch_pipeline.settings import Settings
from hatch_pipeline_tests.support.pipeline_fixtures import (
    ROWS_PER_DAY,
    SOURCES,
    YESTERDAY,
    Pipeline,
    keys_of,
    one_day_bytes,
)


def day(back: int) -> date:
    return YESTERDAY - timedelta(days=back)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def tick(
    settings: Settings, instance: dg.DagsterInstance, resources: Mapping[str, object]
) -> tuple[list[dg.RunRequest], str | None]:
    """One evaluation of the project's sensor, as the daemon runs it: its run requests and its skip reason."""
    defs = build_definitions(settings, resources)
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    with dg.build_sensor_context(instance=instance, resources=resources, definitions=defs) as context:
        result = sensor.evaluate_tick(context)
    return list(result.run_requests or []), result.skip_message


def launch(
    pipeline: Pipeline, request: dg.RunRequest, settings: Settings, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    """Run what the sensor requested on the same instance, tagged as the daemon tags a sensor's run."""
    tags = {**request.tags, RUN_KEY_TAG: request.run_key or ""}
    window = ExportWindow(
        date.fromisoformat(tags["dagster/asset_partition_range_start"]),
        date.fromisoformat(tags["dagster/asset_partition_range_end"]),
    )
    return pipeline.materialize(
        window.start,
        window.end,
        request.asset_selection,
        settings=settings,
        tags=tags,
        instance=instance,
        raise_on_error=False,
    )


def test_the_sensor_is_on_by_default_and_explains_itself() -> None:
    settings = Settings()
    sensor = build_definitions(settings, pipeline_resources(settings)).resolve_sensor_def(SENSOR_NAME)

    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == INTERVAL_SECONDS
    assert sensor.description and "one range run per gap" in sensor.description


def test_the_sensor_requests_exactly_the_missing_days_once_within_the_budget(
    pipeline: Pipeline, instance: dg.DagsterInstance
) -> None:
    settings = Settings(first_partition=day(9).isoformat())
    pipeline.materialize(
        day(9), day(6), keys_of("raw", sources=["contact_history"]), settings=settings, instance=instance
    )
    pipeline.materialize(
        day(9), day(7), keys_of("raw", sources=["conversation_items"]), settings=settings, instance=instance
    )
    seeded = len(pipeline.exports())
    # This morning's run of the daily schedule waits to be launched (a QUEUED run needs a code location's origin,
    # which an in-process instance has not; the sensor treats NOT_STARTED, QUEUED, STARTING and STARTED alike).
    defs = build_definitions(settings, pipeline.resources())
    instance.create_run_for_job(
        defs.resolve_job_def(DAILY_JOB_NAME),
        status=dg.DagsterRunStatus.NOT_STARTED,
        tags={**range_tags(ExportWindow(day(2), day(0))), SCHEDULE_NAME_TAG: SCHEDULE_NAME},
        asset_selection=frozenset(source_keys(SOURCES)),
    )

    # The two seeding exports leave one of three: the gap needs one per source.
    pipeline.api_options = {"max_exports_per_day": seeded + 1}
    requests, skipped = tick(settings, instance, pipeline.resources())
    assert requests == []
    assert (
        skipped
        and f"{ExportWindow(day(6), day(3))} (contact_history, conversation_items) needs at least 2 export(s)"
        in skipped
    )

    pipeline.api_options = {}
    [request], _ = tick(settings, instance, pipeline.resources())
    assert request.tags["dagster/asset_partition_range_start"] == day(6).isoformat()
    assert request.tags["dagster/asset_partition_range_end"] == day(3).isoformat()
    assert set(request.asset_selection or []) == set(source_keys(SOURCES))

    result = launch(pipeline, request, settings, instance)

    assert result.success
    assert sorted(pipeline.exports()[seeded:]) == [
        ("contact_history", day(5).isoformat(), day(3).isoformat(), 200),
        ("conversation_items", day(6).isoformat(), day(3).isoformat(), 200),
    ]
    for source in SOURCES:
        assert pipeline.table(source).height == 4 * ROWS_PER_DAY
    requests, skipped = tick(settings, instance, pipeline.resources())
    assert requests == []
    assert skipped and f"{ExportWindow(day(2), day(0))} will be landed by a queued or running run" in skipped


def test_a_gap_whose_run_failed_is_not_requested_again_and_the_skip_reason_names_the_run(
    pipeline: Pipeline, instance: dg.DagsterInstance
) -> None:
    settings = Settings(first_partition=day(2).isoformat())
    [request], _ = tick(settings, instance, pipeline.resources())
    # No run of the daily schedule yet: yesterday is left to it.
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == (
        day(2).isoformat(),
        day(1).isoformat(),
    )
    pipeline.sandbox.inject(*[Fault(status=500)] * 2 * len(SOURCES))

    failed = launch(pipeline, request, settings, instance)

    assert not failed.success
    requests, skipped = tick(settings, instance, pipeline.resources())
    assert requests == []
    assert skipped and f"was requested before (run {failed.run_id} ended FAILURE)" in skipped


def test_days_a_run_stored_before_it_stopped_at_the_cap_reach_bigquery_without_an_export(
    pipeline: Pipeline, instance: dg.DagsterInstance
) -> None:
    """The raw step stores some windows, then finds the daily cap used up with no pause left and fails: its stored
    days show as materialized, but the run never built their Parquet or table. The sensor asks for exactly that,
    at once and for free, while the days still missing wait for exports."""
    cap = 4
    settings = Settings(first_partition=day(9).isoformat())
    pipeline.sandbox.config = dataclasses.replace(
        pipeline.sandbox.config, max_payload_bytes=one_day_bytes(pipeline) * 3, max_exports_per_day=cap
    )
    pipeline.api_options = {"max_exports_per_day": cap, "max_quota_pauses": 0, "max_slot_wait_seconds": 5}
    stopped = pipeline.materialize(
        day(9), day(1), keys_of(sources=["contact_history"]), settings=settings, instance=instance, raise_on_error=False
    )
    assert not stopped.success
    stored = sorted(
        date.fromisoformat(partition)
        for event in stopped.all_events
        if event.is_step_materialization
        and (partition := event.step_materialization_data.materialization.partition) is not None
    )
    assert stored, "some windows were stored before the cap"
    spent = len(pipeline.exports())

    [request], skipped = tick(settings, instance, pipeline.resources())

    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == (
        stored[0].isoformat(),
        stored[-1].isoformat(),
    )
    assert set(request.asset_selection or []) == set(keys_of("parquet", "bigquery", sources=["contact_history"]))
    assert skipped is None
    assert launch(pipeline, request, settings, instance).success
    assert len(pipeline.exports()) == spent, "the stored days are built from their ZIPs, without an export"
    table = pipeline.table("contact_history")
    assert sorted(set(table["_export_date"].to_list())) == stored
    assert table.height == len(stored) * ROWS_PER_DAY
    requests, skipped = tick(settings, instance, pipeline.resources())
    assert requests == []
    assert skipped and "needs at least" in skipped, "the days still missing wait for exports"

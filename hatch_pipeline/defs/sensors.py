"""The catch-up sensor: days missed by an outage, a failed run or a late key get landed without anyone clicking.

The decision is `hatch_pipeline.catch_up.plan_catch_up`; this shell reads its inputs from the Dagster instance
(partition status of the assets, queued and running runs, earlier requests) and the rate ledger, and turns the
gaps and follow-ups into range runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Final

import dagster as dg

from hatch_pipeline.catch_up import catch_up_window, plan_catch_up
from hatch_pipeline.contract import DATA_SOURCES, DataSource, ExportWindow, latest_allowed_day
from hatch_pipeline.defs.constants import (
    DAILY_JOB_NAME,
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    PARTITION_TAG,
    RUN_KEY_TAG,
    SCHEDULE_NAME,
    SCHEDULE_NAME_TAG,
    SENSOR_NAME,
    SENSOR_NAME_TAG,
    bigquery_key,
    parquet_key,
    raw_key,
    source_keys,
)
from hatch_pipeline.defs.partitions import range_tags
from hatch_pipeline.defs.resources import HatchExportResource
from hatch_pipeline.settings import Settings

INTERVAL_SECONDS: Final = 15 * 60
"""A missed day waits at most this long; each evaluation costs a few instance queries and one ledger read."""
ACTIVE: Final = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
"""Runs that may still land days (a step waiting to retry after a quota pause keeps its run STARTED)."""

DESCRIPTION: Final = (
    "Every 15 minutes, finds the days the vendor still serves (the last 180 days up to yesterday, from the first "
    "partition on) whose hatch/raw asset is missing or failed and that no queued or running run will land, and "
    "requests one range run per gap of consecutive days, for the sources missing them, oldest first, as many as "
    "the exports left in the rate ledger's rolling 24 hours pay for. Landed days whose Parquet or table a failed "
    "run never built (e.g. stored before the raw step stopped at the daily cap) get one run of their Parquet and "
    "BigQuery assets, at once: it spends no export. Yesterday is left to hatch_daily_schedule until it has "
    "launched its run. A gap is requested once: if its run fails, the skip reason names that run; fix the cause "
    "and materialize the gap from the UI."
)


def run_window(run: dg.DagsterRun) -> ExportWindow | None:
    """The days a run materializes: its partition range tags, or its single partition."""
    tags = run.tags
    if PARTITION_RANGE_START_TAG in tags and PARTITION_RANGE_END_TAG in tags:
        return ExportWindow(
            date.fromisoformat(tags[PARTITION_RANGE_START_TAG]), date.fromisoformat(tags[PARTITION_RANGE_END_TAG])
        )
    if PARTITION_TAG in tags:
        day = date.fromisoformat(tags[PARTITION_TAG])
        return ExportWindow(day, day)
    return None


def lands_raw(run: dg.DagsterRun, source: DataSource) -> bool:
    """Whether the run materializes the source's raw asset (a daily-job run without a selection does)."""
    if run.asset_selection is None:
        return run.job_name == DAILY_JOB_NAME
    return raw_key(source) in run.asset_selection


def in_flight(runs: Sequence[dg.DagsterRun]) -> dict[DataSource, list[ExportWindow]]:
    """Per source, the days that `runs` will land in its raw asset."""
    windows = [(run, window) for run in runs if (window := run_window(run)) is not None]
    return {source: [window for run, window in windows if lands_raw(run, source)] for source in DATA_SOURCES}


def days_by_status(
    instance: dg.DagsterInstance, key: dg.AssetKey, window: ExportWindow, partitions: dg.PartitionsDefinition
) -> dict[dg.AssetPartitionStatus, set[date]]:
    """The window's days of the asset `key` by partition status (materialized, failed: its latest attempt failed,
    in progress); days never materialized are left out."""
    status = instance.get_status_by_partition(key, [day.isoformat() for day in window.dates()], partitions)
    days: dict[dg.AssetPartitionStatus, set[date]] = defaultdict(set)
    for partition, state in (status or {}).items():
        if state is not None:
            days[state].add(date.fromisoformat(partition))
    return days


def landed_days(
    instance: dg.DagsterInstance, source: DataSource, window: ExportWindow, partitions: dg.PartitionsDefinition
) -> set[date]:
    """The window's days whose raw partition is materialized and whose latest attempt did not fail."""
    return days_by_status(instance, raw_key(source), window, partitions)[dg.AssetPartitionStatus.MATERIALIZED]


def unbuilt_days(
    instance: dg.DagsterInstance,
    source: DataSource,
    window: ExportWindow,
    partitions: dg.PartitionsDefinition,
    landed: set[date],
) -> set[date]:
    """The `landed` days whose Parquet or table's latest attempt failed and that no run is building. Dagster marks
    the partitions a failed run planned and did not materialize as failed, so this finds the days a raw step stored
    before it failed, whose later steps the run skipped."""
    downstream = (parquet_key(source), bigquery_key(source))
    statuses = [days_by_status(instance, key, window, partitions) for key in downstream]
    failed = set().union(*(status[dg.AssetPartitionStatus.FAILED] for status in statuses))
    building = set().union(*(status[dg.AssetPartitionStatus.IN_PROGRESS] for status in statuses))
    return (landed & failed) - building


def yesterday_pending(instance: dg.DagsterInstance, yesterday: date) -> bool:
    """True until the daily schedule has launched a run that includes yesterday."""
    latest = instance.get_runs(dg.RunsFilter(tags={SCHEDULE_NAME_TAG: SCHEDULE_NAME}), limit=1)
    window = run_window(latest[0]) if latest else None
    return window is None or window.end < yesterday


def catch_up_sensor(
    settings: Settings, job: dg.UnresolvedAssetJobDefinition, partitions: dg.PartitionsDefinition
) -> dg.SensorDefinition:
    """The catch-up sensor of the hatch assets (see DESCRIPTION), running by default."""

    @dg.sensor(
        name=SENSOR_NAME,
        job=job,
        minimum_interval_seconds=INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=DESCRIPTION,
    )
    def hatch_catch_up(
        context: dg.SensorEvaluationContext, hatch_api: HatchExportResource
    ) -> dg.SensorResult | dg.SkipReason:
        instance = context.instance
        today = datetime.now(settings.zone).date()

        def earlier_run(run_key: str) -> str | None:
            runs = instance.get_runs(dg.RunsFilter(tags={SENSOR_NAME_TAG: SENSOR_NAME, RUN_KEY_TAG: run_key}), limit=1)
            return f"run {runs[0].run_id} ended {runs[0].status.value}" if runs else None

        pending = yesterday_pending(instance, latest_allowed_day(today))
        window = catch_up_window(settings.first_partition_day, today, yesterday_pending=pending)
        landed = {s: landed_days(instance, s, window, partitions) for s in DATA_SOURCES} if window else {}
        plan = plan_catch_up(
            window,
            landed=landed,
            unbuilt={s: unbuilt_days(instance, s, window, partitions, landed[s]) for s in landed} if window else {},
            in_flight=in_flight(instance.get_runs(dg.RunsFilter(statuses=ACTIVE))),
            exports_left=hatch_api.ledger().usage().left_in_24h,
            earlier_run=earlier_run,
        )
        if not plan.requests and not plan.follow_ups:
            return dg.SkipReason(plan.explain())
        context.log.info(plan.explain())
        return dg.SensorResult(
            run_requests=[
                *(
                    dg.RunRequest(
                        run_key=gap.run_key, asset_selection=source_keys(gap.sources), tags=range_tags(gap.window)
                    )
                    for gap in plan.requests
                ),
                *(
                    dg.RunRequest(
                        run_key=follow_up.run_key,
                        asset_selection=[key(s) for key in (parquet_key, bigquery_key) for s in follow_up.sources],
                        tags=range_tags(follow_up.window),
                    )
                    for follow_up in plan.follow_ups
                ),
            ]
        )

    return hatch_catch_up

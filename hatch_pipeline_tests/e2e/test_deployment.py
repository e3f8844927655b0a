"""The pipeline through the real Dagster webserver and daemon (see conftest.py): what a user launches in the UI
is what lands in BigQuery, within the vendor's limits, with every check green."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from itertools import pairwise

import polars as pl
import pytest
from google.cloud import bigquery

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.defs.checks import ROWS_MATCH_PARQUET
from hatch_pipeline.defs.constants import (
    AUTOMATION_SENSOR_NAME,
    CHECKS_JOB_NAME,
    CHECKS_SCHEDULE_NAME,
    GROUP,
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    PARTITION_TAG,
    REFETCH_TAG,
    SCHEDULE_NAME,
    SENSOR_NAME,
    SENSOR_NAME_TAG,
    bigquery_key,
    bigquery_pool,
    parquet_key,
    raw_key,
)
from hatch_pipeline.defs.resources import HatchExportResource
from hatch_pipeline.export_api.ledger import RateLedger
from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY, rows_on_day
from hatch_pipeline.schemas import SCHEMAS
from hatch_pipeline.settings import Settings
from hatch_pipeline_tests.e2e.conftest import EXPORT_INTERVAL_SECONDS, Deployment
from hatch_pipeline_tests.e2e.graphql import (
    ASSET_JOB,
    check_executions,
    dry_run_schedule,
    dry_run_sensor,
    group_assets,
    instigator,
    launch_backfill,
    launch_run,
    materializations,
    pool,
    run,
    run_event_types,
    runs,
    start_sensor,
    topology,
    wait_for,
    wait_for_backfill,
    wait_for_run,
)
from hatch_pipeline_tests.support.deployment import kill_run_workers
from hatch_pipeline_tests.support.gcp_fixtures import LocalGcp
from hatch_pipeline_tests.support.pipeline_fixtures import SOURCES, Pipeline, keys_of

pytestmark = pytest.mark.e2e

BACKFILL_TAG = "dagster/backfill"
PARENT_RUN_TAG = "dagster/parent_run_id"
RETRY_NUMBER_TAG = "dagster/retry_number"
POOL_WAIT_SECONDS = 240.0
"""Long enough for the second run to reach its BigQuery step on a busy machine; without the pool it never waits."""
AUTOMATION_CONDITION_TAG = "dagster/from_automation_condition"
"""Dagster's tag on the runs an automation condition sensor launches (its constant is private)."""


def export_ledger(pipeline: Pipeline) -> RateLedger:
    """The deployment's rate ledger, read as its sensor reads it (the bucket's default prefix, the API key)."""
    resource = HatchExportResource(
        api_key=DEFAULT_API_KEY,
        base_url=pipeline.sandbox.base_url,
        ledger_url=Settings(gcs_bucket=pipeline.bucket).ledger_url,
    )
    return resource.ledger()


def rows_per_day(table: pl.DataFrame, days: Iterable[date]) -> dict[date, int]:
    """The table's rows on each of `days`, counted on its partition column (zero for a day it does not hold)."""
    counts = dict(table.group_by("_export_date").len().iter_rows())
    return {day: counts.get(day, 0) for day in days}


def test_the_deployment_keeps_its_instance_in_postgresql_and_reaches_its_code_over_grpc(deployment: Deployment) -> None:
    """What an operator reads in Settings > Configuration and on the code location: not the laptop's SQLite and
    in-process code, but the production instance file's storage and queue, and a code server of its own."""
    found = topology(deployment.webserver)

    assert "PostgresRunStorage" in found.instance_info
    assert "PostgresEventLogStorage" in found.instance_info
    assert "QueuedRunCoordinator" in found.instance_info
    assert "SqliteRunStorage" not in found.instance_info
    assert {"host", "port"} <= set(found.location_metadata), found.location_metadata
    assert "module_name" not in found.location_metadata


def test_a_backfill_of_every_hatch_asset_becomes_one_range_run_that_lands_every_row(deployment: Deployment) -> None:
    webserver, pipeline, days = deployment.webserver, deployment.pipeline, deployment.days
    assets = group_assets(webserver, GROUP)
    assert set(assets) == set(keys_of()), "the group holds the three stages of both sources"

    backfill_id = launch_backfill(webserver, list(assets), days)
    finished = wait_for_backfill(webserver, backfill_id)

    assert (finished.status, finished.error) == ("COMPLETED_SUCCESS", None)
    # BackfillPolicy.single_run: the whole range of all six assets (they share partitions and policy) is one run.
    [run] = runs(webserver, {BACKFILL_TAG: backfill_id})
    assert run.status == "SUCCESS"
    assert run.assets == set(assets)
    # The run queue: the backfill's run waited in the queue until the daemon launched it.
    lifecycle = ("RunEnqueuedEvent", "RunStartingEvent", "RunStartEvent", "RunSuccessEvent")
    assert [kind for kind in run_event_types(webserver, run.run_id) if kind in lifecycle] == list(lifecycle)
    range_tags = (run.tags[PARTITION_RANGE_START_TAG], run.tags[PARTITION_RANGE_END_TAG])
    assert range_tags == (days.start.isoformat(), days.end.isoformat())
    # What the vendor saw: one export per source for the whole range, spaced as the ledger promises.
    assert sorted(pipeline.exports()) == [
        (source, days.start.isoformat(), days.end.isoformat(), 200) for source in SOURCES
    ]
    arrivals = sorted(record.at for record in pipeline.sandbox.access_log)
    gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(arrivals)]
    assert all(gap >= EXPORT_INTERVAL_SECONDS for gap in gaps), gaps
    # Every row the sandbox serves for those days is in each table, on its day.
    served = {day: rows_on_day(day, pipeline.sandbox.config) for day in days.dates()}
    for source in SOURCES:
        assert rows_per_day(pipeline.table(source), days.dates()) == served, source
    # Every check of every asset ran in that run, and none failed. A range run records a check's result without a
    # partition; the per-day executions Dagster planned for it end SKIPPED (1.13), so those are not counted here.
    defined = {(asset, check) for asset, checks in assets.items() for check in checks}
    assert defined, "the assets have checks"
    executed = [
        execution
        for asset, check in defined
        for execution in check_executions(webserver, asset, check)
        if execution.run_id == run.run_id and execution.status != "SKIPPED"
    ]
    assert {(execution.asset, execution.check) for execution in executed} == defined
    assert [execution for execution in executed if execution.status != "SUCCEEDED"] == []


def test_two_backfills_over_overlapping_days_load_the_table_one_at_a_time_and_leave_it_exact(
    deployment: Deployment,
) -> None:
    """Two operators backfill overlapping days of one source at once. Both range runs start (the queue allows ten),
    but the source's BigQuery steps take turns: the pool's limit lives in the instance's PostgreSQL, shared by the
    daemon and every run worker. While BigQuery holds the first load's transaction (the proxy keeps it), the other
    load waits for the pool's slot instead of reaching BigQuery. The days are stored already: neither run exports."""
    webserver, pipeline, days = deployment.webserver, deployment.pipeline, deployment.days
    bigquery = deployment.bigquery
    source = SOURCES[0]
    keys = [raw_key(source), parquet_key(source), bigquery_key(source)]
    overlap = days.start + timedelta(days=4)
    windows = [ExportWindow(days.start, overlap + timedelta(days=4)), ExportWindow(overlap, days.end)]
    exports_before, loads_before = len(pipeline.exports()), len(bigquery.transactions)

    assert pool(webserver, bigquery_pool(source)).limit == 1
    with bigquery.holding_transactions():
        backfill_ids = [launch_backfill(webserver, keys, window) for window in windows]
        bigquery.wait_for_in_flight(1)
        wait_for(
            "the second load waiting for the pool's slot",
            lambda: pool(webserver, bigquery_pool(source)),
            lambda found: found.pending_steps >= 1,
            timeout=POOL_WAIT_SECONDS,
        )
        assert len(bigquery.transactions) == loads_before + 1, "a second load of the table reached BigQuery"
    for backfill_id in backfill_ids:
        assert wait_for_backfill(webserver, backfill_id).status == "COMPLETED_SUCCESS"

    launched = [run for backfill_id in backfill_ids for run in runs(webserver, {BACKFILL_TAG: backfill_id})]
    assert [run.status for run in launched] == ["SUCCESS", "SUCCESS"]
    assert len(bigquery.transactions) == loads_before + 2
    assert len(pipeline.exports()) == exports_before, "stored days were exported again"
    served = {day: rows_on_day(day, pipeline.sandbox.config) for day in days.dates()}
    assert rows_per_day(pipeline.table(source), days.dates()) == served


def test_a_run_whose_pod_dies_is_failed_retried_and_lands_its_range_without_exporting_again(
    deployment: Deployment,
) -> None:
    """A range run's pod dies (its worker and step processes get SIGKILL) while its BigQuery step holds the table's
    pool slot. The code server marks the run failed; run retries re-execute it from the failure; run monitoring gives
    the dead run's slot back, without which the retry's BigQuery step would wait for good. The retry lands the
    range, and the vendor sees no export: the days were stored before the pod died. The failure alert reaches the
    operators' webhook once."""
    webserver, pipeline, days = deployment.webserver, deployment.pipeline, deployment.days
    bigquery = deployment.bigquery
    source = SOURCES[1]
    window = ExportWindow(days.start, days.start + timedelta(days=2))
    keys = [raw_key(source), parquet_key(source), bigquery_key(source)]
    tags = {PARTITION_RANGE_START_TAG: window.start.isoformat(), PARTITION_RANGE_END_TAG: window.end.isoformat()}
    exports_before = len(pipeline.exports())

    with bigquery.holding_transactions():
        run_id = launch_run(webserver, ASSET_JOB, keys, tags)
        bigquery.wait_for_in_flight(1)  # the run's BigQuery step holds the pool's slot
        killed = kill_run_workers(topology(webserver).location_metadata["port"])
    assert killed, "the run had a worker process"

    assert wait_for_run(webserver, run_id).status == "FAILURE"
    [retry] = wait_for("the run's retry", lambda: runs(webserver, {PARENT_RUN_TAG: run_id}), bool)
    assert retry.tags[RETRY_NUMBER_TAG] == "1"
    assert wait_for_run(webserver, retry.run_id).status == "SUCCESS"
    assert len(pipeline.exports()) == exports_before, "stored days were exported again"
    served = {day: rows_on_day(day, pipeline.sandbox.config) for day in window.dates()}
    assert rows_per_day(pipeline.table(source), window.dates()) == served
    # The failure-alert sensor (HATCH_ALERT_WEBHOOK is set) told the operators once, naming the run and its days.
    [alert] = wait_for(
        "the failure alert",
        lambda: [message for message in deployment.alerts.received if run_id[:8] in message["text"]],
        bool,
    )
    assert f"{window.start.isoformat()}..{window.end.isoformat()}" in alert["text"], alert
    assert DEFAULT_API_KEY not in alert["text"]


def test_the_catch_up_sensor_lands_exactly_the_missing_days_in_one_range_run_then_requests_nothing(
    deployment: Deployment, gcp_emulator_env: LocalGcp
) -> None:
    """After the backfill above: the days before its range are the only ones missing (yesterday too is landed, and
    left to the daily schedule anyway). The sensor, turned on, requests them for every source as one range run the
    ledger's budget pays for; once that run has landed them, it has nothing left to request."""
    webserver, pipeline, missing = deployment.webserver, deployment.pipeline, deployment.missing
    ledger = export_ledger(pipeline)
    before = ledger.usage()
    exports_before = len(pipeline.exports())
    start_sensor(webserver, SENSOR_NAME)

    sensor = wait_for(
        "the catch-up sensor's first tick",
        lambda: instigator(webserver, SENSOR_NAME),
        lambda sensor: any(tick["status"] != "STARTED" for tick in sensor.ticks),
    )

    [tick] = sensor.ticks
    assert (tick["status"], tick["error"]) == ("SUCCESS", None), tick
    [requested] = runs(webserver, {SENSOR_NAME_TAG: SENSOR_NAME})
    assert tick["runIds"] == [requested.run_id]
    assert requested.assets == set(keys_of())
    range_tags = (requested.tags[PARTITION_RANGE_START_TAG], requested.tags[PARTITION_RANGE_END_TAG])
    assert range_tags == (missing.start.isoformat(), missing.end.isoformat())
    assert len(SOURCES) <= before.left_in_24h, "the one export per source it needs was within the ledger's budget"

    assert wait_for_run(webserver, requested.run_id).status == "SUCCESS"
    assert pipeline.exports()[exports_before:] == [
        (source, missing.start.isoformat(), missing.end.isoformat(), 200) for source in SOURCES
    ]
    assert ledger.usage().used_in_24h == before.used_in_24h + len(SOURCES)
    served = {day: rows_on_day(day, pipeline.sandbox.config) for day in missing.dates()}
    for source in SOURCES:
        assert rows_per_day(pipeline.table(source), missing.dates()) == served, source

    # Its next tick, evaluated now as "Test sensor" does (its 15-minute interval is far off).
    after = dry_run_sensor(webserver, SENSOR_NAME)
    assert (after.run_requests, after.error) == ([], None)
    assert after.skip_reason is not None and "is landed for every source" in after.skip_reason, after.skip_reason


@pytest.mark.parametrize("name", [SCHEDULE_NAME, CHECKS_SCHEDULE_NAME])
def test_the_schedules_run_in_the_instance_without_being_turned_on(deployment: Deployment, name: str) -> None:
    schedule = instigator(deployment.webserver, name)

    assert schedule.status == "RUNNING"
    assert schedule.next_tick_at is not None
    assert datetime.fromtimestamp(schedule.next_tick_at, UTC).time() == deployment.schedules_at


def test_the_daily_schedule_requests_yesterday_and_the_lookback_as_one_refetch_run(deployment: Deployment) -> None:
    """Its tick, evaluated as "Test schedule" does in the UI (the cron is 12 hours away): one range run of every
    hatch asset over yesterday and the HATCH_LOOKBACK_DAYS days before it, refetching what is stored."""
    tick = datetime.combine(datetime.now(UTC).date(), deployment.schedules_at, UTC)
    lookback = Settings.from_env(deployment.env).lookback_days

    evaluation = dry_run_schedule(deployment.webserver, SCHEDULE_NAME, (tick - timedelta(minutes=1)).timestamp())

    assert (evaluation.skip_reason, evaluation.error) == (None, None)
    [request] = evaluation.run_requests
    yesterday = tick.date() - timedelta(days=1)
    range_tags = (request.tags[PARTITION_RANGE_START_TAG], request.tags[PARTITION_RANGE_END_TAG])
    assert range_tags == ((yesterday - timedelta(days=lookback)).isoformat(), yesterday.isoformat())
    assert request.tags[REFETCH_TAG] == "true"
    assert request.assets == set(keys_of())


def test_a_raw_only_materialization_from_the_ui_reaches_bigquery_through_the_automation_sensor(
    deployment: Deployment,
) -> None:
    """ "Materialize selected" on hatch/raw/S for a landed day reuses its stored export; the automation sensor then
    rebuilds that day's Parquet file and table rows on its own."""
    webserver, pipeline = deployment.webserver, deployment.pipeline
    source, day = SOURCES[0], deployment.days.start + timedelta(days=1)
    exports_before = len(pipeline.exports())

    run_id = launch_run(webserver, ASSET_JOB, [raw_key(source)], {PARTITION_TAG: day.isoformat()})
    launched = wait_for_run(webserver, run_id)

    assert (launched.status, launched.assets) == ("SUCCESS", frozenset({raw_key(source)}))
    assert len(pipeline.exports()) == exports_before, "the stored export was reused"
    [raw] = [event for event in materializations(webserver, raw_key(source), day.isoformat()) if event.run_id == run_id]
    for downstream in (parquet_key(source), bigquery_key(source)):
        [newest, *_] = wait_for(
            f"{downstream.to_user_string()} of {day} materialized after the raw run",
            partial(materializations, webserver, downstream, day.isoformat()),
            lambda found: bool(found) and found[0].timestamp > raw.timestamp,
        )
        follower = run(webserver, newest.run_id)
        assert follower.tags.get(AUTOMATION_CONDITION_TAG) == "true", follower.tags
        assert follower.tags.get(SENSOR_NAME_TAG) == AUTOMATION_SENSOR_NAME, follower.tags
    landed = [*deployment.missing.dates(), *deployment.days.dates()]
    served = {landed_day: rows_on_day(landed_day, pipeline.sandbox.config) for landed_day in landed}
    assert rows_per_day(pipeline.table(source), landed) == served, "the day's rows were replaced, not appended"


def test_rows_deleted_from_a_table_make_the_reconciliation_check_fail_naming_the_day(
    deployment: Deployment, bq_client: bigquery.Client
) -> None:
    """Last in the module: it leaves the table tampered with."""
    webserver, pipeline = deployment.webserver, deployment.pipeline
    source, day = SOURCES[0], deployment.days.start + timedelta(days=2)
    natural_id = SCHEMAS[source].natural_id
    table = f"`{pipeline.local_gcp.project}.{pipeline.dataset}.{source}`"
    deleted = pipeline.table(source).filter(pl.col("_export_date") == day)[natural_id].head(3).to_list()
    assert len(deleted) == 3
    bq_client.query(
        f"DELETE FROM {table} WHERE {natural_id} IN UNNEST(@ids)",
        job_config=bigquery.QueryJobConfig(query_parameters=[bigquery.ArrayQueryParameter("ids", "STRING", deleted)]),
    ).result()

    run_id = launch_run(webserver, CHECKS_JOB_NAME)
    wait_for_run(webserver, run_id)

    verdicts = {
        checked: [
            execution
            for execution in check_executions(webserver, bigquery_key(checked), ROWS_MATCH_PARQUET)
            if execution.run_id == run_id
        ]
        for checked in SOURCES
    }
    [tampered] = verdicts[source]
    assert tampered.status == "FAILED", tampered
    assert list(tampered.metadata["failed_days"]) == [day.isoformat()], tampered.metadata
    assert tampered.description is not None and day.isoformat() in tampered.description
    assert [execution.status for other in SOURCES if other != source for execution in verdicts[other]] == ["SUCCEEDED"]

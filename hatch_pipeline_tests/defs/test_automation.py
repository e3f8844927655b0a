"""Downstream follows: after a run of the raw asset alone (a UI materialization of any days), the automation sensor
requests Parquet and BigQuery for exactly those days, as one backfill; nothing once they are landed, nothing after
runs that already selected them, nothing while a blocking check upstream fails, and never a raw export.

The conditions are evaluated as the daemon evaluates them (`dg.evaluate_automation_conditions`, tick after tick
with its cursor) against a real instance holding real runs against the sandbox and the emulators. That the daemon
then launches the backfill as one range run is left to the webserver-and-daemon test.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Final

import dagster as dg
import polars as pl
from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests
from google.cloud.storage import Client as StorageClient

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.defs import build_definitions
from hatch_pipeline.defs.automation import FOLLOWS_UPSTREAM
from hatch_pipeline.defs.constants import AUTOMATION_SENSOR_NAME, CHECKS_JOB_NAME, DAILY_JOB_NAME, bigquery_key
from hatch_pipeline.defs.partitions import range_tags
from hatch_pipeline_tests.support.pipeline_fixtures import DEFAULT_SETTINGS, SOURCES, YESTERDAY, Pipeline, keys_of

DAYS: Final = ExportWindow(YESTERDAY - timedelta(days=2), YESTERDAY)


def test_only_parquet_and_bigquery_follow_and_the_sensor_runs_by_default(pipeline: Pipeline) -> None:
    defs = build_definitions(DEFAULT_SETTINGS, pipeline.resources())

    conditions = {key: defs.resolve_assets_def(key).automation_conditions_by_key.get(key) for key in keys_of()}
    sensor = defs.resolve_sensor_def(AUTOMATION_SENSOR_NAME)

    following = {key: FOLLOWS_UPSTREAM for key in keys_of("parquet", "bigquery")}
    assert conditions == {key: None for key in keys_of("raw")} | following
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.emit_backfills
    assert set(keys_of()) <= sensor.asset_selection.resolve(defs.resolve_asset_graph())


def test_a_raw_only_materialization_ends_in_bigquery_and_then_nothing_more_is_requested(pipeline: Pipeline) -> None:
    defs = build_definitions(DEFAULT_SETTINGS, pipeline.resources())
    with dg.instance_for_test() as instance:
        start = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # the sensor's first tick
        pipeline.materialize(DAYS.start, DAYS.end, keys_of("raw"), instance=instance)

        after_raw = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=start.cursor)

        days = {day.isoformat() for day in DAYS.dates()}
        assert requested(after_raw) == {key: days for key in keys_of("parquet", "bigquery")}
        [backfill] = build_run_requests(  # what the daemon makes of the tick (emit_backfills=True)
            list(after_raw._requested_subsets), defs.resolve_asset_graph(), run_tags=None, emit_backfills=True
        )
        assert backfill.requires_backfill_daemon()
        subsets = backfill.asset_graph_subset.partitions_subsets_by_asset_key  # type: ignore[union-attr]
        assert {key: set(subset.get_partition_keys()) for key, subset in subsets.items()} == requested(after_raw)

        pipeline.materialize(DAYS.start, DAYS.end, keys_of("parquet", "bigquery"), instance=instance)
        landed = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_raw.cursor)

        assert landed.total_requested == 0
        assert all(pipeline.table(source).height > 0 for source in SOURCES)


def test_turning_the_sensor_on_requests_nothing_for_days_landed_before(pipeline: Pipeline) -> None:
    defs = build_definitions(DEFAULT_SETTINGS, pipeline.resources())
    with dg.instance_for_test() as instance:
        pipeline.materialize(DAYS.start, DAYS.end, keys_of("raw"), instance=instance)

        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # no cursor: the first tick

        assert first.total_requested == 0


def test_runs_that_select_the_whole_pipeline_trigger_nothing(pipeline: Pipeline) -> None:
    """The daily schedule's runs, the catch-up sensor's and whole-pipeline backfills already land every stage."""
    defs = build_definitions(DEFAULT_SETTINGS, pipeline.resources())
    with dg.instance_for_test() as instance:
        start = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        pipeline.materialize(DAYS.start, DAYS.end, keys_of(), instance=instance)

        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=start.cursor)

        assert after.total_requested == 0


def test_days_a_pending_run_will_land_are_not_requested_again(pipeline: Pipeline) -> None:
    """E.g. someone launched the rest from the UI right after the raw run: a run of those days that has not
    started yet (as a queued one) already covers them."""
    defs = build_definitions(DEFAULT_SETTINGS, pipeline.resources())
    with dg.instance_for_test() as instance:
        start = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        pipeline.materialize(DAYS.start, DAYS.end, keys_of("raw"), instance=instance)
        instance.create_run_for_job(
            defs.resolve_job_def(DAILY_JOB_NAME),
            asset_selection=frozenset(keys_of("parquet", "bigquery")),
            tags=range_tags(DAYS),
        )

        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=start.cursor)

        assert after.total_requested == 0


def test_a_run_of_raw_and_parquet_leaves_only_bigquery_to_follow(pipeline: Pipeline) -> None:
    defs = build_definitions(DEFAULT_SETTINGS, pipeline.resources())
    with dg.instance_for_test() as instance:
        start = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        pipeline.materialize(YESTERDAY, YESTERDAY, keys_of("raw", "parquet"), instance=instance)

        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=start.cursor)

        assert requested(after) == {key: {YESTERDAY.isoformat()} for key in keys_of("bigquery")}


def test_bigquery_waits_while_a_blocking_check_of_its_parquet_fails(
    pipeline: Pipeline, gcs_client: StorageClient
) -> None:
    defs = build_definitions(DEFAULT_SETTINGS, pipeline.resources())
    checks = defs.resolve_job_def(CHECKS_JOB_NAME)
    with dg.instance_for_test() as instance:
        start = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        pipeline.materialize(YESTERDAY, YESTERDAY, keys_of("raw", "parquet"), instance=instance)
        # The Parquet file of contact_history loses rows, and the morning's checks see it: rows_match_raw is red.
        [manifest] = gcs_client.list_blobs(pipeline.bucket, prefix="hatch/manifests/parquet/contact_history/")
        file_key = json.loads(manifest.download_as_bytes())["days"][YESTERDAY.isoformat()]["file"]
        parquet_file = gcs_client.bucket(pipeline.bucket).blob(f"hatch/{file_key}")
        shortened = io.BytesIO()
        pl.read_parquet(io.BytesIO(parquet_file.download_as_bytes())).head(5).write_parquet(shortened)
        parquet_file.upload_from_string(shortened.getvalue())
        assert not checks.execute_in_process(instance=instance, raise_on_error=False).success

        blocked = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=start.cursor)

        assert requested(blocked) == {bigquery_key("conversation_items"): {YESTERDAY.isoformat()}}

        pipeline.materialize(YESTERDAY, YESTERDAY, keys_of("parquet", sources=["contact_history"]), instance=instance)
        rebuilt = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=blocked.cursor)

        assert requested(rebuilt) == {bigquery_key("contact_history"): {YESTERDAY.isoformat()}}


def requested(result: dg.EvaluateAutomationConditionsResult) -> dict[dg.AssetKey, set[str | None]]:
    """The partitions a tick requested, per asset that got any."""
    return {key: set(result.get_requested_partitions(key)) for key in keys_of() if result.get_num_requested(key)}

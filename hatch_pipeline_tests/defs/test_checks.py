"""Every check can fail: each test lands real days through the sandbox and the emulators, damages what is stored
through the official clients (or lands data the checks must warn about), and reads the verdict Dagster recorded.
The day counts of range runs are read back per partition from the instance, as the UI shows them."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl
from google.cloud import bigquery
from google.cloud.storage import Client as StorageClient

from hatch_pipeline.contract import DataSource, ExportWindow
from hatch_pipeline.defs import build_definitions
from hatch_pipeline.defs.catalog import ROW_COUNT
from hatch_pipeline.defs.checks import (
    COLUMNS_MATCH_SCHEMA,
    ONE_ROW_PER_ID,
    REFETCH_NOT_SHRUNK,
    ROWS_INSIDE_EXPORT_WINDOW,
    ROWS_MATCH_PARQUET,
    ROWS_MATCH_RAW,
    YESTERDAY_LANDED,
)
from hatch_pipeline.defs.constants import CHECKS_JOB_NAME, CHECKS_SCHEDULE_NAME, REFETCH_TAG, bigquery_key, parquet_key
from hatch_pipeline.local.sandbox.data import NEW_CONTACT_HISTORY_COLUMNS, rows_for_day
from hatch_pipeline.settings import Settings
from hatch_pipeline_tests.support.pipeline_fixtures import ROWS_PER_DAY, YESTERDAY, Pipeline, keys_of

SOURCE: Final[DataSource] = "contact_history"
TABLE_ID = "contact_history_id"
PARQUET = parquet_key(SOURCE)
TABLE = bigquery_key(SOURCE)
DAY_BEFORE = YESTERDAY - timedelta(days=1)


def verdicts(result: dg.ExecuteInProcessResult) -> dict[tuple[dg.AssetKey, str], dg.AssetCheckEvaluation]:
    return {(check.asset_key, check.check_name): check for check in result.get_asset_check_evaluations()}


def failed_days(check: dg.AssetCheckEvaluation) -> Any:
    return value_of(check, "failed_days")


def value_of(check: dg.AssetCheckEvaluation, name: str) -> Any:
    """A metadata entry's plain value (JSON metadata as dicts and lists)."""
    return check.metadata[name].value


def run_all_checks(
    pipeline: Pipeline, instance: dg.DagsterInstance, tags: Mapping[str, str] | None = None
) -> dg.ExecuteInProcessResult:
    """The job the morning schedule runs: every check over every stored day, materializing nothing."""
    defs = build_definitions(Settings(), pipeline.resources())
    job = defs.resolve_job_def(CHECKS_JOB_NAME)
    return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def parquet_manifest(pipeline: Pipeline, gcs_client: StorageClient) -> dict[str, Any]:
    [blob] = gcs_client.list_blobs(pipeline.bucket, prefix=f"hatch/manifests/parquet/{SOURCE}/")
    document: dict[str, Any] = json.loads(blob.download_as_bytes())
    return document


def test_day_counts_show_per_partition_and_every_check_passes(pipeline: Pipeline) -> None:
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, empty_days=frozenset({DAY_BEFORE}))
    instance = dg.DagsterInstance.ephemeral()

    result = pipeline.materialize(DAY_BEFORE, YESTERDAY, keys_of(sources=[SOURCE]), instance=instance)

    # One range run, yet each partition carries its own day's counts (not the range's 12 on both days).
    for key in (PARQUET, TABLE):
        for day, rows in ((DAY_BEFORE, 0), (YESTERDAY, ROWS_PER_DAY)):
            filter_ = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day.isoformat()])
            [record] = instance.fetch_materializations(filter_, limit=10).records
            metadata = record.asset_materialization.metadata if record.asset_materialization else {}
            assert metadata[ROW_COUNT] == dg.IntMetadataValue(rows), (key, day)
            assert metadata["range_rows"] == dg.IntMetadataValue(ROWS_PER_DAY)
    checks = verdicts(result)
    assert {name for _, name in checks} == {
        ROWS_MATCH_RAW,
        REFETCH_NOT_SHRUNK,
        COLUMNS_MATCH_SCHEMA,
        ROWS_INSIDE_EXPORT_WINDOW,
        ROWS_MATCH_PARQUET,
        ONE_ROW_PER_ID,
        YESTERDAY_LANDED,
    }
    assert all(check.passed for check in checks.values()), {k: c.description for k, c in checks.items()}
    assert checks[(TABLE, ROWS_MATCH_PARQUET)].metadata["days_checked"] == dg.IntMetadataValue(2)


def test_rows_deleted_or_repeated_in_the_table_turn_its_checks_red(
    pipeline: Pipeline, bq_client: bigquery.Client
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    pipeline.materialize(DAY_BEFORE, YESTERDAY, keys_of(sources=[SOURCE]), instance=instance)
    table = f"`{pipeline.local_gcp.project}.{pipeline.dataset}.{SOURCE}`"
    landed = pipeline.table(SOURCE)
    deleted = landed.filter(pl.col("_export_date") == DAY_BEFORE)[TABLE_ID].head(3).to_list()
    repeated = landed.filter(pl.col("_export_date") == YESTERDAY)[TABLE_ID][0]
    bq_client.query(
        f"DELETE FROM {table} WHERE {TABLE_ID} IN UNNEST(@ids)",
        job_config=bigquery.QueryJobConfig(query_parameters=[bigquery.ArrayQueryParameter("ids", "STRING", deleted)]),
    ).result()
    bq_client.query(f"INSERT INTO {table} SELECT * FROM {table} WHERE {TABLE_ID} = '{repeated}'").result()

    checks = verdicts(run_all_checks(pipeline, instance))

    rows_match = checks[(TABLE, ROWS_MATCH_PARQUET)]
    assert not rows_match.passed and rows_match.severity == dg.AssetCheckSeverity.ERROR
    assert failed_days(rows_match) == {
        DAY_BEFORE.isoformat(): {"raw": ROWS_PER_DAY, "parquet": ROWS_PER_DAY, "table": ROWS_PER_DAY - 3},
        YESTERDAY.isoformat(): {"raw": ROWS_PER_DAY, "parquet": ROWS_PER_DAY, "table": ROWS_PER_DAY + 1},
    }
    one_row = checks[(TABLE, ONE_ROW_PER_ID)]
    assert not one_row.passed
    assert failed_days(one_row) == {
        YESTERDAY.isoformat(): {"rows": ROWS_PER_DAY + 1, "extra_rows_of_repeated_ids": 1, "rows_without_id": 0}
    }
    assert checks[(PARQUET, ROWS_MATCH_RAW)].passed


def test_a_damaged_parquet_file_or_an_unparsed_refetch_turn_rows_match_raw_red_and_block_the_load(
    pipeline: Pipeline, gcs_client: StorageClient
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    pipeline.materialize(DAY_BEFORE, YESTERDAY, keys_of(sources=[SOURCE]), instance=instance)
    # The day before's Parquet file loses rows behind the manifest's back...
    blob = gcs_client.bucket(pipeline.bucket).blob(
        "hatch/" + parquet_manifest(pipeline, gcs_client)["days"][DAY_BEFORE.isoformat()]["file"]
    )
    shortened = io.BytesIO()
    pl.read_parquet(io.BytesIO(blob.download_as_bytes())).head(5).write_parquet(shortened)
    blob.upload_from_string(shortened.getvalue())
    # ...and yesterday is exported again with more rows, but not parsed.
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, rows_per_day=ROWS_PER_DAY + 3)
    pipeline.materialize(YESTERDAY, YESTERDAY, keys_of("raw", sources=[SOURCE]), tags={REFETCH_TAG: "true"})

    checks = verdicts(run_all_checks(pipeline, instance))

    rows_match_raw = checks[(PARQUET, ROWS_MATCH_RAW)]
    assert not rows_match_raw.passed and rows_match_raw.severity == dg.AssetCheckSeverity.ERROR
    assert failed_days(rows_match_raw) == {
        DAY_BEFORE.isoformat(): {
            "problem": "the Parquet file holds another number of rows than were read from the export",
            "raw": ROWS_PER_DAY,
            "parquet": 5,
        },
        YESTERDAY.isoformat(): {
            "problem": "the Parquet was built from an older export than the newest stored one",
            "raw": ROWS_PER_DAY,
            "parquet": ROWS_PER_DAY,
        },
    }
    assert failed_days(checks[(TABLE, ROWS_MATCH_PARQUET)]) == {
        DAY_BEFORE.isoformat(): {"raw": ROWS_PER_DAY, "parquet": 5, "table": ROWS_PER_DAY}
    }

    # Blocking: a run that would load these days into BigQuery stops before the load.
    blocked = pipeline.materialize(
        DAY_BEFORE,
        YESTERDAY,
        dg.AssetSelection.checks_for_assets(PARQUET) | dg.AssetSelection.assets(TABLE),
        raise_on_error=False,
    )
    assert not blocked.success
    assert blocked.get_asset_materialization_events() == []
    assert pipeline.table(SOURCE).height == 2 * ROWS_PER_DAY

    # What the check says to do: rebuild the Parquet (from the stored ZIPs), then the table.
    fixed = pipeline.materialize(DAY_BEFORE, YESTERDAY, keys_of("parquet", "bigquery", sources=[SOURCE]))
    assert all(check.passed for (_, name), check in verdicts(fixed).items() if name != YESTERDAY_LANDED)
    assert pipeline.table(SOURCE).group_by("_export_date").len().sort("_export_date")["len"].to_list() == [
        ROWS_PER_DAY,
        ROWS_PER_DAY + 3,
    ]


def test_columns_the_vendor_adds_or_stops_sending_warn_naming_them(
    pipeline: Pipeline, gcs_client: StorageClient
) -> None:
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, new_columns_from=YESTERDAY)
    pipeline.materialize(YESTERDAY, YESTERDAY, keys_of("raw", sources=[SOURCE]))
    # The stored export loses its phone column (the vendor stopped sending it).
    [blob] = gcs_client.list_blobs(pipeline.bucket, prefix=f"hatch/raw/{SOURCE}/")
    with zipfile.ZipFile(io.BytesIO(blob.download_as_bytes())) as archive:
        [member] = archive.infolist()
        lines = archive.read(member).decode().splitlines()
    rewritten = io.BytesIO()
    with zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED) as archive:
        without_phone = ({name: value for name, value in json.loads(line).items() if name != "phone"} for line in lines)
        archive.writestr(member.filename, "".join(json.dumps(record) + "\n" for record in without_phone))
    blob.upload_from_string(rewritten.getvalue(), content_type="application/zip")

    result = pipeline.materialize(YESTERDAY, YESTERDAY, keys_of("parquet", sources=[SOURCE]))

    columns = verdicts(result)[(PARQUET, COLUMNS_MATCH_SCHEMA)]
    assert not columns.passed and columns.severity == dg.AssetCheckSeverity.WARN
    on_yesterday = [str(ExportWindow(YESTERDAY, YESTERDAY))]
    assert value_of(columns, "new_columns") == dict.fromkeys(NEW_CONTACT_HISTORY_COLUMNS, on_yesterday)
    assert value_of(columns, "missing_columns") == {"phone": on_yesterday}
    assert columns.description is not None and "external_contact_id" in columns.description
    assert "phone" in columns.description


def test_rows_dated_outside_their_export_window_warn_with_the_count_and_the_setting(pipeline: Pipeline) -> None:
    # The sandbox assigns rows to days in UTC; a pipeline set to another zone sees rows of the previous day.
    zone = "America/Los_Angeles"
    settings = Settings.from_env({"HATCH_TIMEZONE": zone})
    day = DAY_BEFORE  # yesterday in UTC may still be today in Los Angeles
    sent = [row["updated_at"] for row in rows_for_day(SOURCE, day, pipeline.sandbox.config)]
    elsewhere = sum(datetime.fromisoformat(str(at)).astimezone(ZoneInfo(zone)).date() != day for at in sent)
    assert 0 < elsewhere < ROWS_PER_DAY
    instance = dg.DagsterInstance.ephemeral()

    result = pipeline.materialize(
        day, day, keys_of("raw", "parquet", sources=[SOURCE]), settings=settings, instance=instance
    )

    window = verdicts(result)[(PARQUET, ROWS_INSIDE_EXPORT_WINDOW)]
    assert not window.passed and window.severity == dg.AssetCheckSeverity.WARN
    assert failed_days(window) == {day.isoformat(): {"dated_outside_window": elsewhere, "undated": 0}}
    assert window.description is not None
    assert f"HATCH_TIMEZONE={zone}" in window.description
    assert "HATCH_CONTACT_HISTORY_DATE_COLUMN" in window.description
    filter_ = dg.AssetRecordsFilter(asset_key=PARQUET, asset_partitions=[day.isoformat()])
    [record] = instance.fetch_materializations(filter_, limit=1).records
    assert record.asset_materialization is not None
    assert record.asset_materialization.metadata["rows_dated_outside_window"] == dg.IntMetadataValue(elsewhere)


def test_yesterday_landed_turns_red_at_the_deadline_although_older_days_landed_since(pipeline: Pipeline) -> None:
    instance = dg.DagsterInstance.ephemeral()
    pipeline.materialize(YESTERDAY - timedelta(days=2), DAY_BEFORE, keys_of(sources=[SOURCE]), instance=instance)
    today = YESTERDAY + timedelta(days=1)
    settings = Settings()
    schedule = (
        build_definitions(settings, pipeline.resources()).get_repository_def().get_schedule_def(CHECKS_SCHEDULE_NAME)
    )
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 9 * * *", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING

    def landed_at(hour: int, minute: int) -> dg.AssetCheckEvaluation:
        """What the schedule's run of every check says about yesterday, on a tick at that time today (UTC)."""
        tick = datetime.combine(today, time(hour, minute), tzinfo=UTC)
        with dg.build_schedule_context(scheduled_execution_time=tick) as context:
            [request] = schedule.evaluate_tick(context).run_requests or []
        return verdicts(run_all_checks(pipeline, instance, request.tags))[(TABLE, YESTERDAY_LANDED)]

    before_deadline = landed_at(8, 59)
    assert before_deadline.passed
    assert before_deadline.metadata["due_partition"] == dg.TextMetadataValue(DAY_BEFORE.isoformat())

    overdue = landed_at(9, 0)
    assert not overdue.passed and overdue.severity == dg.AssetCheckSeverity.ERROR
    assert overdue.metadata["due_partition"] == dg.TextMetadataValue(YESTERDAY.isoformat())
    assert value_of(overdue, "newest_materialization")["partition"] == DAY_BEFORE.isoformat()
    assert overdue.description is not None and YESTERDAY.isoformat() in overdue.description

    pipeline.materialize(YESTERDAY, YESTERDAY, keys_of(sources=[SOURCE]), instance=instance)
    assert landed_at(9, 0).passed

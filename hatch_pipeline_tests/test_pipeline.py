"""The whole pipeline, as a user runs it: the six assets materialized by Dagster against the sandbox API, the GCS
emulator and the BigQuery emulator, over real connections with the official clients (see pipeline_fixtures.py)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import dagster as dg
import polars as pl
import pytest
from google.cloud import bigquery
from google.cloud.storage import Client as StorageClient

from hatch_pipeline.contract import OutputFormat
from hatch_pipeline.defs.assets import REFETCH_TAG
from hatch_pipeline.defs.checks import YESTERDAY_LANDED
from hatch_pipeline.export_api.ledger import organization_key
from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY, EDGE_BODIES
from hatch_pipeline.local.sandbox.server import Fault
from hatch_pipeline.settings import Settings
from hatch_pipeline_tests.pipeline_fixtures import (
    ROWS_PER_DAY,
    SOURCES,
    YESTERDAY,
    Pipeline,
    keys_of,
    one_day_bytes,
    without_load_time,
)


def test_one_day_lands_in_bigquery_with_reconciled_counts(pipeline: Pipeline) -> None:
    result = pipeline.materialize(YESTERDAY, YESTERDAY)

    for source in SOURCES:
        table = pipeline.table(source)
        assert table.height == ROWS_PER_DAY
        assert table["_export_date"].unique().to_list() == [YESTERDAY]
        assert table["_source_file"].str.starts_with(f"gs://{pipeline.bucket}/hatch/raw/{source}/").all()
        materialization = result.asset_materializations_for_node(f"hatch__bigquery__{source}")[0]
        assert materialization.metadata["rows"] == dg.IntMetadataValue(ROWS_PER_DAY)
    assert sorted(pipeline.exports()) == [
        (source, YESTERDAY.isoformat(), YESTERDAY.isoformat(), 200) for source in SOURCES
    ]
    # Every check ran and passed; yesterday_landed depends on the hour (before HATCH_FRESH_BY the day before
    # yesterday is due), so test_checks.py judges it on an injected clock.
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 6 * len(SOURCES)
    assert [(c.asset_key, c.check_name) for c in checks if not c.passed and c.check_name != YESTERDAY_LANDED] == []


def test_the_api_key_appears_in_no_stored_object_log_or_metadata(pipeline: Pipeline, gcs_client: StorageClient) -> None:
    result = pipeline.materialize(YESTERDAY, YESTERDAY)

    stored = list(gcs_client.list_blobs(pipeline.bucket))
    assert any(blob.name.endswith("ledger/" + organization_key(DEFAULT_API_KEY) + ".json") for blob in stored)
    for blob in stored:
        assert DEFAULT_API_KEY.encode() not in blob.download_as_bytes(), blob.name
    for event in result.all_events:
        assert DEFAULT_API_KEY not in str(event), event.event_type_value


def test_a_30_day_backfill_of_both_sources_takes_two_exports(pipeline: Pipeline) -> None:
    start = YESTERDAY - timedelta(days=29)

    pipeline.materialize(start, YESTERDAY)

    assert sorted(pipeline.exports()) == [(source, start.isoformat(), YESTERDAY.isoformat(), 200) for source in SOURCES]
    for source in SOURCES:
        table = pipeline.table(source)
        assert table.height == 30 * ROWS_PER_DAY
        assert table.group_by("_export_date").len()["len"].to_list() == [ROWS_PER_DAY] * 30


def test_re_running_any_stage_leaves_identical_tables_and_only_raw_calls_the_api(
    pipeline: Pipeline, gcs_client: StorageClient
) -> None:
    start = YESTERDAY - timedelta(days=4)
    pipeline.materialize(start, YESTERDAY)
    first = {source: without_load_time(pipeline.table(source)) for source in SOURCES}
    first_days = {start + timedelta(days=offset) for offset in range(5)}
    exports_after_first_run = len(pipeline.exports())

    pipeline.materialize(start, YESTERDAY, keys_of("parquet", "bigquery"))
    assert len(pipeline.exports()) == exports_after_first_run, "Parquet and BigQuery must not call the API"
    pipeline.materialize(YESTERDAY - timedelta(days=2), YESTERDAY - timedelta(days=1), keys_of("bigquery"))
    assert len(pipeline.exports()) == exports_after_first_run
    pipeline.materialize(start, YESTERDAY)

    for source in SOURCES:
        again = without_load_time(pipeline.table(source))
        assert again.equals(first[source])
        natural_id = "contact_history_id" if source == "contact_history" else "id"
        assert again[natural_id].n_unique() == again.height
        # Only Parquet under parquet/S/, one file per day: each build retires the files it supersedes.
        names = [blob.name for blob in gcs_client.list_blobs(pipeline.bucket, prefix=f"hatch/parquet/{source}/")]
        assert all(name.endswith(".parquet") for name in names), names
        assert sorted(name.split("/")[3] for name in names) == [f"export_date={day}" for day in sorted(first_days)]
        manifests = list(gcs_client.list_blobs(pipeline.bucket, prefix=f"hatch/manifests/parquet/{source}/"))
        assert len(manifests) == 1


def test_csv_and_json_exports_give_identical_tables(pipeline: Pipeline, bq_client: bigquery.Client) -> None:
    start = YESTERDAY - timedelta(days=2)
    pipeline.materialize(start, YESTERDAY)
    from_json = {source: pipeline.table(source) for source in SOURCES}

    pipeline.dataset = f"hatch_{uuid.uuid4().hex[:12]}"
    pipeline.output_format = "csv"
    pipeline.materialize(start, YESTERDAY)

    for source in SOURCES:
        from_csv = pipeline.table(source)
        assert from_csv["_source_file"].str.ends_with(".zip").all()
        assert from_csv.drop("_loaded_at", "_source_file").equals(from_json[source].drop("_loaded_at", "_source_file"))
    bq_client.delete_dataset(
        f"{pipeline.local_gcp.project}.{pipeline.dataset}", delete_contents=True, not_found_ok=True
    )


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_values_reach_bigquery_as_the_vendor_sent_them(pipeline: Pipeline, fmt: OutputFormat) -> None:
    pipeline.output_format = fmt
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, edge_values=True)  # and a BOM in CSV

    pipeline.materialize(YESTERDAY, YESTERDAY)

    # JSON keeps "" apart from null; the vendor's CSV writes both as an empty field, which reads as null.
    empty = "" if fmt == "json" else None
    bodies = pipeline.table("conversation_items").sort("created_at")["body"].to_list()
    assert bodies[: len(EDGE_BODIES)] == [empty if body == "" else body for body in EDGE_BODIES]
    contacts = pipeline.table("contact_history").sort("updated_at")
    assert contacts["email"][0] == empty
    assert contacts.height == ROWS_PER_DAY


def test_columns_the_vendor_adds_are_added_to_the_table(pipeline: Pipeline) -> None:
    start = YESTERDAY - timedelta(days=5)
    pipeline.sandbox.config = dataclasses.replace(
        pipeline.sandbox.config, new_columns_from=YESTERDAY - timedelta(days=1)
    )
    pipeline.materialize(start, YESTERDAY - timedelta(days=2), keys_of(sources=["contact_history"]))
    assert "invoice_id" not in pipeline.table("contact_history").columns

    pipeline.materialize(YESTERDAY - timedelta(days=1), YESTERDAY, keys_of(sources=["contact_history"]))

    table = pipeline.table("contact_history")
    assert {"external_contact_id", "appointment_id", "invoice_id"} <= set(table.columns)
    assert table.height == 6 * ROWS_PER_DAY
    older = table.filter(pl.col("_export_date") < YESTERDAY - timedelta(days=1))
    assert older["appointment_id"].null_count() == older.height


def test_a_range_mixing_old_and_new_columns_loads_in_one_run(pipeline: Pipeline) -> None:
    start = YESTERDAY - timedelta(days=3)
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, new_columns_from=YESTERDAY)
    pipeline.materialize(start, YESTERDAY - timedelta(days=1), keys_of("raw", sources=["contact_history"]))
    pipeline.materialize(YESTERDAY, YESTERDAY, keys_of("raw", sources=["contact_history"]))

    pipeline.materialize(start, YESTERDAY, keys_of("parquet", "bigquery", sources=["contact_history"]))

    table = pipeline.table("contact_history")
    assert table.height == 4 * ROWS_PER_DAY
    assert "invoice_id" in table.columns


def test_a_day_refetched_empty_gives_zero_rows_and_a_green_run(pipeline: Pipeline) -> None:
    pipeline.materialize(YESTERDAY - timedelta(days=1), YESTERDAY)
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, empty_days=frozenset({YESTERDAY}))

    result = pipeline.materialize(YESTERDAY, YESTERDAY, tags={REFETCH_TAG: "true"})

    assert result.success
    assert (("contact_history", YESTERDAY.isoformat(), YESTERDAY.isoformat(), 204)) in pipeline.exports()
    for source in SOURCES:
        table = pipeline.table(source)
        assert table["_export_date"].to_list() == [YESTERDAY - timedelta(days=1)] * ROWS_PER_DAY


def test_a_413_inside_a_range_is_split_and_every_row_lands(pipeline: Pipeline) -> None:
    start = YESTERDAY - timedelta(days=7)
    pipeline.sandbox.config = dataclasses.replace(
        pipeline.sandbox.config, max_payload_bytes=one_day_bytes(pipeline) * 5
    )

    result = pipeline.materialize(start, YESTERDAY, keys_of("raw", "parquet", "bigquery", sources=["contact_history"]))

    statuses = [status for *_, status in pipeline.exports()]
    assert statuses[0] == 413 and statuses.count(200) >= 2
    raw = result.asset_materializations_for_node("hatch__raw__contact_history")[0]
    assert raw.metadata["refused_413"] == dg.IntMetadataValue(1)
    table = pipeline.table("contact_history")
    assert table.height == 8 * ROWS_PER_DAY
    assert table["contact_history_id"].n_unique() == table.height


def test_a_run_that_fails_half_way_is_re_run_without_loss_or_duplicates(
    pipeline: Pipeline, gcs_client: StorageClient
) -> None:
    start = YESTERDAY - timedelta(days=3)
    keys = keys_of(sources=["contact_history"])
    # The range is too large for one export (413); a one-day probe lands, then the vendor keeps failing.
    pipeline.sandbox.config = dataclasses.replace(
        pipeline.sandbox.config, max_payload_bytes=one_day_bytes(pipeline) * 3
    )
    pipeline.sandbox.inject(Fault(slow=0.001), Fault(slow=0.001), Fault(status=500), Fault(status=500))

    failed = pipeline.materialize(start, YESTERDAY, keys, raise_on_error=False)

    assert not failed.success
    assert [status for *_, status in pipeline.exports()] == [413, 200, 500, 500]
    stored = [blob.name for blob in gcs_client.list_blobs(pipeline.bucket, prefix="hatch/raw/contact_history/")]
    assert any(name.endswith(".zip") for name in stored), "what was exported before the failure is kept"
    pipeline.materialize(start, YESTERDAY, keys)
    table = pipeline.table("contact_history")
    assert table.height == 4 * ROWS_PER_DAY
    assert table["contact_history_id"].n_unique() == table.height


def test_a_corrupt_stored_zip_fails_clearly_and_loads_nothing(pipeline: Pipeline, gcs_client: StorageClient) -> None:
    keys = keys_of("raw", "parquet", "bigquery", sources=["contact_history"])
    pipeline.materialize(YESTERDAY, YESTERDAY, keys)
    before = pipeline.table("contact_history")
    [stored] = [
        blob
        for blob in gcs_client.list_blobs(pipeline.bucket, prefix="hatch/raw/contact_history/")
        if blob.name.endswith(".zip")
    ]
    stored.upload_from_string(b"PK\x03\x04 not really a zip")

    result = pipeline.materialize(YESTERDAY, YESTERDAY, keys[1:], raise_on_error=False)

    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    message = str(failure.step_failure_data.error)
    assert stored.name.rsplit("/", 1)[-1] in message
    assert pipeline.table("contact_history").equals(before)


def test_days_the_api_no_longer_serves_fail_before_any_export(pipeline: Pipeline) -> None:
    start = YESTERDAY - timedelta(days=200)
    settings = Settings(first_partition=start.isoformat())

    result = pipeline.materialize(start, start + timedelta(days=9), raise_on_error=False, settings=settings)

    assert not result.success
    failures = [str(event.step_failure_data.error) for event in result.all_events if event.is_step_failure]
    assert failures and all("more than 180 days back" in failure for failure in failures)
    assert pipeline.exports() == []

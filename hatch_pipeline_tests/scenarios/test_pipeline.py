"""The whole pipeline, as a user runs it: the six assets materialized by Dagster against the sandbox API, the GCS
emulator and the BigQuery emulator, over real connections with the official clients (see
support/pipeline_fixtures.py)."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import date, timedelta

import dagster as dg
import polars as pl
import pytest
from google.cloud import bigquery
from google.cloud.storage import Client as StorageClient

from hatch_pipeline.contract import DataSource, ExportWindow, OutputFormat, earliest_allowed_day
from hatch_pipeline.defs.catalog import ROW_COUNT
from hatch_pipeline.defs.checks import COLUMNS_MATCH_SCHEMA, YESTERDAY_LANDED
from hatch_pipeline.defs.constants import ACCEPT_SHRINK_TAG, REFETCH_TAG
from hatch_pipeline.defs.resources import HatchExportResource, HatchStorageResource
from hatch_pipeline.export_api.client import HatchExportClient
from hatch_pipeline.export_api.ledger import organization_key
from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY, EDGE_BODIES
from hatch_pipeline.local.sandbox.server import Fault
from hatch_pipeline.schemas import SCHEMAS
from hatch_pipeline.settings import Settings
from hatch_pipeline.stages.raw import land_raw
from hatch_pipeline_tests.support.pipeline_fixtures import (
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
        assert materialization.metadata[ROW_COUNT] == dg.IntMetadataValue(ROWS_PER_DAY)
    assert sorted(pipeline.exports()) == [
        (source, YESTERDAY.isoformat(), YESTERDAY.isoformat(), 200) for source in SOURCES
    ]
    # Every check ran and passed; yesterday_landed depends on the hour (before HATCH_FRESH_BY the day before
    # yesterday is due), so defs/test_checks.py judges it on an injected clock.
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 7 * len(SOURCES)
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


def test_vendor_columns_named_like_reserved_words_reach_the_table_and_the_latest_view(pipeline: Pipeline) -> None:
    reserved = ("from", "to", "end", "hash")
    earlier = YESTERDAY - timedelta(days=1)
    pipeline.materialize(earlier, earlier)
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, extra_columns=reserved)

    result = pipeline.materialize(YESTERDAY, YESTERDAY)

    # The BigQuery checks query the new columns' table; columns_match_schema warns of the new columns, as it should.
    failed = {check.check_name for check in result.get_asset_check_evaluations() if not check.passed}
    assert failed <= {COLUMNS_MATCH_SCHEMA, YESTERDAY_LANDED}
    for source in SOURCES:
        natural_id = SCHEMAS[source].natural_id
        table = pipeline.table(source)
        assert set(reserved) <= set(table.columns)
        older = table.filter(pl.col("_export_date") == earlier)
        assert older.select(reserved).null_count().row(0) == (ROWS_PER_DAY,) * len(reserved)
        landed = table.filter(pl.col("_export_date") == YESTERDAY).sort(natural_id)
        assert landed.height == ROWS_PER_DAY
        assert landed["from"].str.starts_with(f"from {YESTERDAY} ").all()
        latest = pipeline.table(source, view=True).filter(pl.col("_export_date") == YESTERDAY).sort(natural_id)
        assert latest.select(natural_id, *reserved).equals(landed.select(natural_id, *reserved))


def test_a_range_mixing_old_and_new_columns_loads_in_one_run(pipeline: Pipeline) -> None:
    start = YESTERDAY - timedelta(days=3)
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, new_columns_from=YESTERDAY)
    pipeline.materialize(start, YESTERDAY - timedelta(days=1), keys_of("raw", sources=["contact_history"]))
    pipeline.materialize(YESTERDAY, YESTERDAY, keys_of("raw", sources=["contact_history"]))

    pipeline.materialize(start, YESTERDAY, keys_of("parquet", "bigquery", sources=["contact_history"]))

    table = pipeline.table("contact_history")
    assert table.height == 4 * ROWS_PER_DAY
    assert "invoice_id" in table.columns


def test_a_day_refetched_empty_with_the_shrink_accepted_gives_zero_rows_and_a_green_run(pipeline: Pipeline) -> None:
    pipeline.materialize(YESTERDAY - timedelta(days=1), YESTERDAY)
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, empty_days=frozenset({YESTERDAY}))

    result = pipeline.materialize(YESTERDAY, YESTERDAY, tags={REFETCH_TAG: "true", ACCEPT_SHRINK_TAG: "true"})

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


def store_while_served(pipeline: Pipeline, source: DataSource, day: date, today: date) -> None:
    """Store `day` as an earlier run did when the vendor still served it: the sandbox and the client are told
    `today`, the raw stage stores the export as any run would."""
    api, storage = pipeline.resources()["hatch_api"], pipeline.resources()["hatch_storage"]
    assert isinstance(api, HatchExportResource) and isinstance(storage, HatchStorageResource)
    served = pipeline.sandbox.config
    pipeline.sandbox.config = dataclasses.replace(served, today=today)
    try:
        with HatchExportClient(
            api_key=DEFAULT_API_KEY, base_url=pipeline.sandbox.base_url, ledger=api.ledger(), today=lambda: today
        ) as client:
            land_raw(
                source,
                ExportWindow(day, day),
                client=client,
                ledger=api.ledger(),
                store=storage.store(),
                max_payload_bytes=api.max_payload_bytes,
                today=today,
            )
    finally:
        pipeline.sandbox.config = served


def test_a_range_reaching_past_the_vendors_180_days_lands_the_rest_and_reports_each_lost_day(
    pipeline: Pipeline,
) -> None:
    """Of the days before the vendor's window, the stored one is rebuilt from its ZIP and the others are reported
    on their partitions; the days the vendor serves are exported once, and the whole range succeeds."""
    today = YESTERDAY + timedelta(days=1)
    earliest = earliest_allowed_day(today)
    start, end = earliest - timedelta(days=3), earliest + timedelta(days=1)
    kept, lost = earliest - timedelta(days=2), [earliest - timedelta(days=3), earliest - timedelta(days=1)]
    store_while_served(pipeline, "contact_history", kept, today - timedelta(days=30))
    stored = len(pipeline.exports())

    with dg.instance_for_test() as instance:
        result = pipeline.materialize(
            start,
            end,
            keys_of(sources=["contact_history"]),
            settings=Settings(first_partition=start.isoformat()),
            instance=instance,
        )
        warnings = [entry.user_message for entry in instance.all_logs(result.run_id) if entry.level == logging.WARNING]

    assert result.success
    assert pipeline.exports()[stored:] == [("contact_history", str(earliest), str(end), 200)]
    days = pipeline.table("contact_history")["_export_date"].value_counts()
    assert dict(zip(days["_export_date"], days["count"], strict=True)) == {
        kept: ROWS_PER_DAY,
        earliest: ROWS_PER_DAY,
        end: ROWS_PER_DAY,
    }
    for stage in ("raw", "parquet", "bigquery"):
        events = result.asset_materializations_for_node(f"hatch__{stage}__contact_history")
        reasons = {event.partition: event.metadata.get("lost") for event in events}
        assert sorted(str(day) for day, reason in reasons.items() if reason) == [str(day) for day in lost], stage
        why = f"the vendor serves only the last 180 days (today, {today}"
        assert all(why in str(reasons[str(day)]) for day in lost), stage
    assert [message.split(" (")[0] for message in warnings] == [
        "contact_history: 2 day(s) are not exported",
        "contact_history: 2 day(s) have no Parquet",
        "contact_history: 2 day(s) are left as the table holds them",
    ]
    assert all(f"({lost[0]}..{lost[0]}, {lost[1]}..{lost[1]})" in message for message in warnings)


def test_a_range_of_lost_days_only_fails_before_any_export_and_says_why(pipeline: Pipeline) -> None:
    start = YESTERDAY - timedelta(days=200)
    settings = Settings(first_partition=start.isoformat())

    result = pipeline.materialize(start, start + timedelta(days=9), raise_on_error=False, settings=settings)

    assert not result.success
    failures = [str(event.step_failure_data.error) for event in result.all_events if event.is_step_failure]
    assert failures and all("can be landed: nothing is stored for it and the vendor serves only" in f for f in failures)
    assert pipeline.exports() == []

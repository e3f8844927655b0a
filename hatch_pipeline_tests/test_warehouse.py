"""The warehouse against the local emulators, through the official clients: Parquet written with polars and uploaded
to the GCS emulator, loaded by bqemulator from the same files."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pytest
import requests
from google.api_core.client_options import ClientOptions
from google.api_core.exceptions import GoogleAPICallError
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.storage import Bucket

from hatch_pipeline.warehouse import (
    LoadFailed,
    MissingColumns,
    ParquetGroup,
    RowsOutsideDays,
    SchemaConflict,
    TableSpec,
    bigquery_columns,
    bigquery_type,
    ensure_dataset,
    ensure_latest_view,
    ensure_table,
    quoted,
    replace_days,
    rows_by_day,
)
from hatch_pipeline_tests.support.gcp_fixtures import LocalGcp

FIRST_DAY = date(2026, 3, 1)
LOADED_AT = datetime(2026, 3, 20, 6, 0, tzinfo=UTC)


def contact_rows(
    day: date, ids: Sequence[str], *, updated_at: datetime | None = None, **extra: pl.Series
) -> pl.DataFrame:
    """contact_history rows for one export day, with the lineage columns parsing adds."""
    stamp = updated_at or datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12)
    frame = pl.DataFrame(
        {
            "contact_history_id": list(ids),
            "updated_at": [stamp] * len(ids),
            "sales_value": [10.5 * (i + 1) for i in range(len(ids))],
            "opted_out": [i % 2 == 0 for i in range(len(ids))],
            "_export_date": [day] * len(ids),
            "_source_file": [f"raw/contact_history/{day}.zip"] * len(ids),
            "_loaded_at": [LOADED_AT] * len(ids),
        },
        schema_overrides={"updated_at": pl.Datetime("us", "UTC"), "_loaded_at": pl.Datetime("us", "UTC")},
    )
    return frame.with_columns(**extra)


def upload(bucket: Bucket, frame: pl.DataFrame, name: str) -> str:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    bucket.blob(name).upload_from_string(buffer.getvalue(), content_type="application/octet-stream")
    return f"gs://{bucket.name}/{name}"


def upload_days(bucket: Bucket, frames: dict[date, pl.DataFrame], prefix: str = "parquet") -> list[str]:
    return [upload(bucket, frame, f"{prefix}/{day}.parquet") for day, frame in frames.items()]


def table_rows(client: bigquery.Client, spec: TableSpec) -> list[dict[str, Any]]:
    sql = f"SELECT * FROM {spec.fqn} ORDER BY _export_date, contact_history_id"
    rows: list[dict[str, Any]] = client.query(sql).to_arrow(create_bqstorage_client=False).to_pylist()
    return rows


def table_names(client: bigquery.Client, spec: TableSpec) -> set[str]:
    return {table.table_id for table in client.list_tables(f"{spec.project}.{spec.dataset}")}


COLUMNS = bigquery_columns(contact_rows(FIRST_DAY, ["x"]).schema)


def group(uris: Sequence[str], columns: dict[str, str] = COLUMNS) -> ParquetGroup:
    return ParquetGroup(tuple(uris), columns)


def with_invoice(day: date, ids: Sequence[str]) -> pl.DataFrame:
    """Rows as the vendor writes them since it added `invoice_id` (appended after the older columns)."""
    return contact_rows(day, ids, invoice_id=pl.Series([f"inv-{day}-{id_}" for id_ in ids]))


INVOICE_COLUMNS = bigquery_columns(with_invoice(FIRST_DAY, ["x"]).schema)


@pytest.fixture
def spec(local_gcp: LocalGcp, bq_dataset: str) -> TableSpec:
    return TableSpec(
        project=local_gcp.project, dataset=bq_dataset, table="contact_history", cluster_column="contact_history_id"
    )


@pytest.fixture
def table(bq_client: bigquery.Client, spec: TableSpec) -> TableSpec:
    ensure_table(bq_client, spec, COLUMNS)
    return spec


def days_from(start: date, count: int) -> list[date]:
    return [start + timedelta(days=offset) for offset in range(count)]


def test_bigquery_type_maps_each_supported_polars_dtype() -> None:
    assert bigquery_type(pl.String()) == "STRING"
    assert bigquery_type(pl.Int64()) == "INT64"
    assert bigquery_type(pl.Float64()) == "FLOAT64"
    assert bigquery_type(pl.Boolean()) == "BOOL"
    assert bigquery_type(pl.Date()) == "DATE"
    assert bigquery_type(pl.Datetime("us", "UTC")) == "TIMESTAMP"


@pytest.mark.parametrize("dtype", [pl.Datetime("us"), pl.Datetime("us", "Europe/Berlin"), pl.Int32(), pl.Null()])
def test_bigquery_type_refuses_other_dtypes_and_says_what_to_cast_to(dtype: pl.DataType) -> None:
    with pytest.raises(TypeError, match=r"Datetime\('us', 'UTC'\)"):
        bigquery_type(dtype)


def test_bigquery_columns_names_the_column_it_cannot_map() -> None:
    with pytest.raises(TypeError, match="column 'appointment_id'"):
        bigquery_columns({"id": pl.String(), "appointment_id": pl.Null()})


@pytest.mark.parametrize(
    ("field", "value"),
    [("table", "t`; DROP TABLE x; --"), ("dataset", "d.e"), ("project", "p`"), ("cluster_column", "a b")],
)
def test_table_spec_refuses_names_that_could_inject_sql(field: str, value: str) -> None:
    names: dict[str, Any] = {
        "project": "hatch-local",
        "dataset": "hatch",
        "table": "contact_history",
        "cluster_column": "id",
    }
    with pytest.raises(ValueError, match="not a"):
        TableSpec(**{**names, field: value})


def test_quoted_puts_reserved_words_in_backticks() -> None:
    assert [quoted(name) for name in ("from", "end", "hash")] == ["`from`", "`end`", "`hash`"]


@pytest.mark.parametrize("name", ["from`; DROP TABLE x; --", "end\n", "a\\b", "", "a b"])
def test_quoted_refuses_names_that_could_end_the_quotes_and_says_what_a_name_needs(name: str) -> None:
    with pytest.raises(ValueError, match=r"is not a usable table or column name: start with a letter or underscore"):
        quoted(name)


def test_ensure_dataset_and_table_are_idempotent(bq_client: bigquery.Client, local_gcp: LocalGcp) -> None:
    spec = TableSpec(
        project=local_gcp.project,
        dataset="hatch_idempotent",
        table="contact_history",
        cluster_column="contact_history_id",
    )
    for _ in range(2):
        ensure_dataset(bq_client, spec.project, spec.dataset, local_gcp.location)
        assert ensure_table(bq_client, spec, COLUMNS) == []
    assert table_names(bq_client, spec) == {"contact_history"}
    assert [field.name for field in bq_client.get_table(spec.table_id).schema] == list(COLUMNS)
    bq_client.delete_dataset(f"{spec.project}.{spec.dataset}", delete_contents=True)


def test_an_existing_dataset_is_looked_up_never_created(bq_client: bigquery.Client, local_gcp: LocalGcp) -> None:
    """Least privilege: with dataset-level roles a create call is refused (403) even for a dataset that exists, so
    an existing dataset must cost a lookup only. The requests the official client sends are recorded on its
    session (the emulator grants everything, so a refused create cannot be shown; the absence of the call can)."""
    name = "hatch_least_privilege"
    bq_client.create_dataset(bigquery.Dataset(f"{local_gcp.project}.{name}"))
    sent: list[tuple[str, str]] = []
    session = requests.Session()
    session.hooks["response"].append(lambda response, **_: sent.append((response.request.method, response.url)))
    recording = bigquery.Client(
        project=local_gcp.project,
        location=local_gcp.location,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=local_gcp.bigquery_endpoint),
        _http=session,
    )

    ensure_dataset(recording, local_gcp.project, name, local_gcp.location)

    assert [method for method, url in sent if "/datasets" in url] == ["GET"]
    bq_client.delete_dataset(f"{local_gcp.project}.{name}")


def test_table_is_partitioned_on_export_date_and_clustered_on_the_natural_id(
    bq_client: bigquery.Client, table: TableSpec
) -> None:
    metadata = bq_client.get_table(table.table_id)
    assert metadata.time_partitioning.field == "_export_date"
    assert metadata.time_partitioning.type_ == "DAY"
    assert metadata.clustering_fields == ["contact_history_id"]
    layout = bq_client.query(
        f"""SELECT column_name, is_partitioning_column, clustering_ordinal_position
        FROM `{table.project}.{table.dataset}.INFORMATION_SCHEMA.COLUMNS` WHERE table_name = '{table.table}'"""
    ).to_arrow(create_bqstorage_client=False)
    by_column = {row["column_name"]: row for row in layout.to_pylist()}
    assert by_column["_export_date"]["is_partitioning_column"] == "YES"
    assert by_column["contact_history_id"]["clustering_ordinal_position"] == 1


def test_a_new_column_is_added_and_older_rows_read_null(
    bq_client: bigquery.Client, gcs_bucket: Bucket, table: TableSpec
) -> None:
    day_one, day_two = days_from(FIRST_DAY, 2)
    old = replace_days(
        bq_client,
        table,
        groups=[group(upload_days(gcs_bucket, {day_one: contact_rows(day_one, ["a"])}))],
        days=[day_one],
        run_id="run-1",
    )
    newer = contact_rows(day_two, ["b"], external_contact_id=pl.Series(["ext-b"]))
    newer_columns = bigquery_columns(newer.schema)

    assert ensure_table(bq_client, table, newer_columns) == ["external_contact_id"]
    assert ensure_table(bq_client, table, newer_columns) == []
    replace_days(
        bq_client,
        table,
        groups=[group(upload_days(gcs_bucket, {day_two: newer}), newer_columns)],
        days=[day_two],
        run_id="run-2",
    )

    rows = table_rows(bq_client, table)
    assert old.rows_loaded == 1
    assert [(row["contact_history_id"], row["external_contact_id"]) for row in rows] == [("a", None), ("b", "ext-b")]


def test_a_changed_column_type_is_refused_naming_column_and_both_types(
    bq_client: bigquery.Client, table: TableSpec
) -> None:
    retyped = {**COLUMNS, "sales_value": "STRING"}
    with pytest.raises(SchemaConflict, match="sales_value is FLOAT64 in the table but STRING in the new data"):
        ensure_table(bq_client, table, retyped)


def test_replacing_twice_with_the_same_files_gives_the_same_table(
    bq_client: bigquery.Client, gcs_bucket: Bucket, table: TableSpec
) -> None:
    days = days_from(FIRST_DAY, 3)
    uris = upload_days(gcs_bucket, {day: contact_rows(day, [f"{day}-a", f"{day}-b"]) for day in days})

    first = replace_days(bq_client, table, groups=[group(uris)], days=days, run_id="run-1")
    after_first = table_rows(bq_client, table)
    second = replace_days(bq_client, table, groups=[group(uris)], days=days, run_id="run-1")

    assert table_rows(bq_client, table) == after_first
    assert len(after_first) == 6
    assert first.rows_by_day == second.rows_by_day == dict.fromkeys(days, 2)
    assert rows_by_day(bq_client, table, days) == dict.fromkeys(days, 2)


def test_replacing_some_days_leaves_the_other_days_untouched(
    bq_client: bigquery.Client, gcs_bucket: Bucket, table: TableSpec
) -> None:
    days = days_from(FIRST_DAY, 4)
    uris = upload_days(gcs_bucket, {day: contact_rows(day, ["a", "b"]) for day in days}, prefix="v1")
    replace_days(bq_client, table, groups=[group(uris)], days=days, run_id="run-1")
    untouched = [row for row in table_rows(bq_client, table) if row["_export_date"] not in days[1:3]]

    reloaded = {day: contact_rows(day, ["c"]) for day in days[1:3]}
    replace_days(
        bq_client,
        table,
        groups=[group(upload_days(gcs_bucket, reloaded, prefix="v2"))],
        days=days[1:3],
        run_id="run-2",
    )

    rows = table_rows(bq_client, table)
    assert [row for row in rows if row["_export_date"] not in days[1:3]] == untouched
    assert rows_by_day(bq_client, table, days) == {days[0]: 2, days[1]: 1, days[2]: 1, days[3]: 2}


def test_a_day_without_files_ends_up_empty(bq_client: bigquery.Client, gcs_bucket: Bucket, table: TableSpec) -> None:
    days = days_from(FIRST_DAY, 3)
    uris = upload_days(gcs_bucket, {day: contact_rows(day, ["a"]) for day in days}, prefix="v1")
    replace_days(bq_client, table, groups=[group(uris)], days=days, run_id="run-1")

    only_last = upload_days(gcs_bucket, {days[2]: contact_rows(days[2], ["a", "b"])}, prefix="v2")
    result = replace_days(bq_client, table, groups=[group(only_last)], days=days[1:], run_id="run-2")

    assert result.rows_by_day == {days[1]: 0, days[2]: 2}
    assert rows_by_day(bq_client, table, days) == {days[0]: 1, days[1]: 0, days[2]: 2}


def test_no_files_at_all_only_deletes_the_days(
    bq_client: bigquery.Client, gcs_bucket: Bucket, table: TableSpec
) -> None:
    days = days_from(FIRST_DAY, 2)
    uris = upload_days(gcs_bucket, {day: contact_rows(day, ["a"]) for day in days})
    replace_days(bq_client, table, groups=[group(uris)], days=days, run_id="run-1")

    result = replace_days(bq_client, table, groups=[], days=[days[0]], run_id="run-2")

    assert (result.rows_loaded, result.jobs) == (0, 1)
    assert rows_by_day(bq_client, table, days) == {days[0]: 0, days[1]: 1}


def test_the_number_of_jobs_does_not_grow_with_the_number_of_days(
    bq_client: bigquery.Client, gcs_bucket: Bucket, table: TableSpec
) -> None:
    one_day = [FIRST_DAY]
    thirty_days = days_from(FIRST_DAY + timedelta(days=10), 30)
    small = replace_days(
        bq_client,
        table,
        groups=[group(upload_days(gcs_bucket, {FIRST_DAY: contact_rows(FIRST_DAY, ["a"])}))],
        days=one_day,
        run_id="run-1",
    )
    large = replace_days(
        bq_client,
        table,
        groups=[group(upload_days(gcs_bucket, {day: contact_rows(day, ["a"]) for day in thirty_days}))],
        days=thirty_days,
        run_id="run-2",
    )

    assert large.rows_loaded == 30
    assert small.jobs == large.jobs == 3  # load into staging, count the staged days, the transaction


def test_the_latest_view_holds_the_newest_row_of_each_id(
    bq_client: bigquery.Client, gcs_bucket: Bucket, table: TableSpec
) -> None:
    day_one, day_two = days_from(FIRST_DAY, 2)
    frames = {
        day_one: contact_rows(day_one, ["a", "b"], updated_at=datetime(2026, 3, 1, 9, tzinfo=UTC)),
        # "a" changed again the next day; "b" did not.
        day_two: contact_rows(day_two, ["a"], updated_at=datetime(2026, 3, 2, 9, tzinfo=UTC)),
    }
    replace_days(
        bq_client,
        table,
        groups=[group(upload_days(gcs_bucket, frames))],
        days=[day_one, day_two],
        run_id="run-1",
    )

    ensure_latest_view(bq_client, table, id_column="contact_history_id")
    ensure_latest_view(bq_client, table, id_column="contact_history_id")  # replacing the view is harmless

    latest = bq_client.query(
        f"SELECT contact_history_id, updated_at, _export_date FROM {table.latest_view.fqn} ORDER BY 1"
    ).to_arrow(create_bqstorage_client=False)
    assert latest.to_pylist() == [
        {"contact_history_id": "a", "updated_at": datetime(2026, 3, 2, 9, tzinfo=UTC), "_export_date": day_two},
        {"contact_history_id": "b", "updated_at": datetime(2026, 3, 1, 9, tzinfo=UTC), "_export_date": day_one},
    ]


@pytest.mark.parametrize("broken", ["missing", "corrupt"])
def test_a_failing_load_leaves_the_table_as_it_was_and_drops_staging(
    broken: str, bq_client: bigquery.Client, gcs_bucket: Bucket, table: TableSpec
) -> None:
    days = days_from(FIRST_DAY, 2)
    uris = upload_days(gcs_bucket, {day: contact_rows(day, ["a"]) for day in days}, prefix="v1")
    replace_days(bq_client, table, groups=[group(uris)], days=days, run_id="run-1")
    before = table_rows(bq_client, table)

    # The broken file is in the second group, so the first group's staging table exists and is loaded by then.
    ensure_table(bq_client, table, INVOICE_COLUMNS)
    good = upload_days(gcs_bucket, {days[0]: contact_rows(days[0], ["b", "c"])}, prefix="v2")
    bad = f"gs://{gcs_bucket.name}/v2/{days[1]}.parquet"
    if broken == "corrupt":
        gcs_bucket.blob(f"v2/{days[1]}.parquet").upload_from_string(b"PAR1 this is not parquet")
    with pytest.raises(LoadFailed, match="nothing was replaced"):
        replace_days(bq_client, table, groups=[group(good), group([bad], INVOICE_COLUMNS)], days=days, run_id="run-2")

    assert table_rows(bq_client, table) == [{**row, "invoice_id": None} for row in before]
    assert table_names(bq_client, table) == {table.table}


def test_rows_for_days_outside_the_replaced_ones_are_refused(
    bq_client: bigquery.Client, gcs_bucket: Bucket, table: TableSpec
) -> None:
    days = days_from(FIRST_DAY, 2)
    uris = upload_days(gcs_bucket, {day: contact_rows(day, ["a"]) for day in days})

    with pytest.raises(RowsOutsideDays, match=f"rows for {days[1]}"):
        replace_days(bq_client, table, groups=[group(uris)], days=[days[0]], run_id="run-1")

    assert table_rows(bq_client, table) == []
    assert table_names(bq_client, table) == {table.table}


def test_a_failing_transaction_rolls_back_the_delete(
    bq_client: bigquery.Client, gcs_bucket: Bucket, table: TableSpec
) -> None:
    days = days_from(FIRST_DAY, 2)
    uris = upload_days(gcs_bucket, {day: contact_rows(day, ["a"]) for day in days}, prefix="v1")
    replace_days(bq_client, table, groups=[group(uris)], days=days, run_id="run-1")
    before = table_rows(bq_client, table)

    # Skipping ensure_table, which refuses retyped columns (replace_days only checks that the columns exist): the
    # second group's text cannot go into the table's FLOAT64 column, so its INSERT fails after the DELETE and the
    # first group's INSERT have run inside the transaction.
    retyped = contact_rows(days[1], ["c"], sales_value=pl.Series(["a lot"]))
    groups = [
        group(upload_days(gcs_bucket, {days[0]: contact_rows(days[0], ["b"])}, prefix="v2")),
        group(upload_days(gcs_bucket, {days[1]: retyped}, prefix="v2"), bigquery_columns(retyped.schema)),
    ]
    with pytest.raises(GoogleAPICallError):
        replace_days(bq_client, table, groups=groups, days=days, run_id="run-2")

    assert table_rows(bq_client, table) == before
    assert table_names(bq_client, table) == {table.table}


def test_a_range_whose_older_days_lack_a_column_loads_in_one_call(
    bq_client: bigquery.Client, gcs_bucket: Bucket, table: TableSpec
) -> None:
    days = days_from(FIRST_DAY, 30)
    older, newer = days[:10], days[10:]
    assert ensure_table(bq_client, table, INVOICE_COLUMNS) == ["invoice_id"]

    result = replace_days(
        bq_client,
        table,
        groups=[
            group(upload_days(gcs_bucket, {day: contact_rows(day, ["a"]) for day in older})),
            group(upload_days(gcs_bucket, {day: with_invoice(day, ["a", "b"]) for day in newer}), INVOICE_COLUMNS),
        ],
        days=days,
        run_id="run-1",
    )

    invoices = {
        (row["_export_date"], row["contact_history_id"]): row["invoice_id"] for row in table_rows(bq_client, table)
    }
    assert invoices == {
        **{(day, "a"): None for day in older},
        **{(day, id_): f"inv-{day}-{id_}" for day in newer for id_ in ("a", "b")},
    }
    assert result.rows_loaded == 10 + 2 * 20
    assert (
        result.rows_by_day
        == rows_by_day(bq_client, table, days)
        == {**dict.fromkeys(older, 1), **dict.fromkeys(newer, 2)}
    )
    assert table_names(bq_client, table) == {table.table}


def test_groups_with_extra_columns_in_different_orders_fill_the_right_columns(
    bq_client: bigquery.Client, gcs_bucket: Bucket, table: TableSpec
) -> None:
    # Both extra columns are STRING, so loading either file into the other group's column order would succeed
    # silently with the values swapped.
    day_one, day_two = days = days_from(FIRST_DAY, 2)
    first = contact_rows(day_one, ["a"], invoice_id=pl.Series(["inv-a"]), external_id=pl.Series(["ext-a"]))
    second = contact_rows(day_two, ["b"], external_id=pl.Series(["ext-b"]), invoice_id=pl.Series(["inv-b"]))
    first_columns, second_columns = bigquery_columns(first.schema), bigquery_columns(second.schema)
    assert list(first_columns)[-2:] == list(reversed(list(second_columns)[-2:]))
    ensure_table(bq_client, table, first_columns)

    replace_days(
        bq_client,
        table,
        groups=[
            group(upload_days(gcs_bucket, {day_one: first}), first_columns),
            group(upload_days(gcs_bucket, {day_two: second}), second_columns),
        ],
        days=days,
        run_id="run-1",
    )

    rows = table_rows(bq_client, table)
    assert [(row["contact_history_id"], row["invoice_id"], row["external_id"]) for row in rows] == [
        ("a", "inv-a", "ext-a"),
        ("b", "inv-b", "ext-b"),
    ]


def test_each_further_column_set_adds_only_its_load_job(
    bq_client: bigquery.Client, gcs_bucket: Bucket, table: TableSpec
) -> None:
    ensure_table(bq_client, table, INVOICE_COLUMNS)
    days = days_from(FIRST_DAY, 30)
    one_group = replace_days(
        bq_client,
        table,
        groups=[group(upload_days(gcs_bucket, {days[0]: contact_rows(days[0], ["a"])}, prefix="v1"))],
        days=days[:1],
        run_id="run-1",
    )
    two_groups = replace_days(
        bq_client,
        table,
        groups=[
            group(upload_days(gcs_bucket, {day: contact_rows(day, ["a"]) for day in days[:10]}, prefix="v2")),
            group(
                upload_days(gcs_bucket, {day: with_invoice(day, ["a"]) for day in days[10:]}, prefix="v2"),
                INVOICE_COLUMNS,
            ),
        ],
        days=days,
        run_id="run-2",
    )

    assert two_groups.rows_loaded == 30
    assert two_groups.jobs == one_group.jobs + 1 == 4  # one more load; one count and one transaction for all


def test_groups_with_the_same_columns_share_one_load(
    bq_client: bigquery.Client, gcs_bucket: Bucket, table: TableSpec
) -> None:
    days = days_from(FIRST_DAY, 2)
    uris = upload_days(gcs_bucket, {day: contact_rows(day, ["a"]) for day in days})

    result = replace_days(bq_client, table, groups=[group(uris[:1]), group(uris[1:])], days=days, run_id="run-1")

    assert (result.rows_by_day, result.jobs) == (dict.fromkeys(days, 1), 3)


def test_columns_the_table_lacks_are_refused_before_anything_runs(
    bq_client: bigquery.Client, gcs_bucket: Bucket, table: TableSpec
) -> None:
    days = days_from(FIRST_DAY, 2)
    uris = upload_days(gcs_bucket, {day: contact_rows(day, ["a"]) for day in days}, prefix="v1")
    replace_days(bq_client, table, groups=[group(uris)], days=days, run_id="run-1")
    before = table_rows(bq_client, table)

    newer = upload_days(gcs_bucket, {days[1]: with_invoice(days[1], ["b"])}, prefix="v2")
    with pytest.raises(MissingColumns, match=r"has no column invoice_id.*Call ensure_table"):
        replace_days(
            bq_client, table, groups=[group(uris[:1]), group(newer, INVOICE_COLUMNS)], days=days, run_id="run-2"
        )

    assert table_rows(bq_client, table) == before
    assert table_names(bq_client, table) == {table.table}


def test_a_file_in_two_groups_is_refused(bq_client: bigquery.Client, table: TableSpec) -> None:
    uri = "gs://bucket/parquet/2026-03-01.parquet"
    with pytest.raises(ValueError, match="passed more than once"):
        replace_days(
            bq_client, table, groups=[group([uri]), group([uri], INVOICE_COLUMNS)], days=[FIRST_DAY], run_id="r"
        )


def test_a_group_without_files_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one file"):
        ParquetGroup((), COLUMNS)

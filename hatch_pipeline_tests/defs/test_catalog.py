"""What the Dagster catalog shows, read back from the instance as the UI reads it: Columns (`dagster/column_schema`),
Row count per partition (`dagster/row_count`, equal to the table's own count), the table's name, and for each raw
partition the ZIP that holds it."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any, Final

import dagster as dg
from google.cloud import bigquery

from hatch_pipeline.contract import DataSource
from hatch_pipeline.defs.assets import build_source_assets
from hatch_pipeline.defs.catalog import COLUMN_SCHEMA, ROW_COUNT, TABLE_NAME, URI
from hatch_pipeline.defs.constants import bigquery_key, parquet_key, raw_key
from hatch_pipeline.defs.partitions import daily_partitions
from hatch_pipeline.schemas import COLUMN_DESCRIPTIONS, LINEAGE_COLUMNS, SCHEMAS
from hatch_pipeline.settings import Settings
from hatch_pipeline_tests.support.pipeline_fixtures import ROWS_PER_DAY, YESTERDAY, Pipeline, keys_of

SOURCE: Final[DataSource] = "conversation_items"
DAY_BEFORE: Final = YESTERDAY - timedelta(days=1)
DAYS: Final = (DAY_BEFORE, YESTERDAY)


def newest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, day: str) -> dict[str, Any]:
    filter_ = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day])
    [record] = instance.fetch_materializations(filter_, limit=1).records
    materialization = record.asset_materialization
    return dict(materialization.metadata) if materialization else {}


def table_counts(client: bigquery.Client, table: str) -> dict[str, int]:
    rows = client.query(f"SELECT _export_date AS day, COUNT(*) AS n FROM `{table}` GROUP BY day").result()
    return {row.day.isoformat(): row.n for row in rows}


def test_the_catalog_shows_columns_row_counts_and_the_table_of_each_partition(
    pipeline: Pipeline, bq_client: bigquery.Client
) -> None:
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, empty_days=frozenset({DAY_BEFORE}))
    instance = dg.DagsterInstance.ephemeral()

    pipeline.materialize(DAY_BEFORE, YESTERDAY, keys_of(sources=[SOURCE]), instance=instance)

    table = f"{pipeline.local_gcp.project}.{pipeline.dataset}.{SOURCE}"
    counts = table_counts(bq_client, table)
    assert counts == {YESTERDAY.isoformat(): ROWS_PER_DAY}
    for day in (day.isoformat() for day in DAYS):
        loaded = newest_metadata(instance, bigquery_key(SOURCE), day)
        assert loaded[ROW_COUNT] == dg.IntMetadataValue(counts.get(day, 0)), day
        assert loaded[TABLE_NAME] == dg.TextMetadataValue(table)
        built = newest_metadata(instance, parquet_key(SOURCE), day)
        assert built[ROW_COUNT] == loaded[ROW_COUNT]
        columns = built[COLUMN_SCHEMA].value.columns
        assert [column.name for column in columns][-len(LINEAGE_COLUMNS) :] == list(LINEAGE_COLUMNS)
        assert {column.name for column in columns} == {field.name for field in bq_client.get_table(table).schema}
        assert all(column.description == COLUMN_DESCRIPTIONS[column.name] for column in columns)
        raw = newest_metadata(instance, raw_key(SOURCE), day)
        assert str(raw[URI].value).startswith(f"gs://{pipeline.bucket}/hatch/raw/{SOURCE}/")
        assert raw["export"] == dg.TextMetadataValue("exported")


def test_the_tables_assets_declare_their_documented_columns_with_types() -> None:
    """Before anything lands, the asset pages show Columns: the documented ones with their BigQuery types, and the
    lineage columns."""
    assets = build_source_assets(SOURCE, daily_partitions(Settings()))
    for asset in assets[1:]:
        [spec] = asset.specs
        schema = spec.metadata[COLUMN_SCHEMA]
        names = [column.name for column in schema.columns]
        assert names == [*SCHEMAS[SOURCE].columns, *LINEAGE_COLUMNS]
        assert {column.name: column.type for column in schema.columns}["created_at"] == "TIMESTAMP"


def test_the_warehouse_documents_the_table_its_columns_and_its_latest_view(
    pipeline: Pipeline, bq_client: bigquery.Client
) -> None:
    """What an analyst sees in BigQuery's console, read through the official client: each documented and lineage
    column's description, the table's description and labels, and the view's description, which the second load
    (it replaces the view) sets again."""
    for _ in range(2):
        pipeline.materialize(YESTERDAY, YESTERDAY, keys_of(sources=[SOURCE]))

    table = bq_client.get_table(f"{pipeline.local_gcp.project}.{pipeline.dataset}.{SOURCE}")
    described = {field.name: field.description for field in table.schema}
    assert {name: described.get(name) for name in [*SCHEMAS[SOURCE].columns, *LINEAGE_COLUMNS]} == {
        name: COLUMN_DESCRIPTIONS[name] for name in [*SCHEMAS[SOURCE].columns, *LINEAGE_COLUMNS]
    }
    assert table.labels == {"source": SOURCE, "pipeline": "hatch_pipeline"}
    assert table.description and "Bulk Export API" in table.description
    view = bq_client.get_table(f"{pipeline.local_gcp.project}.{pipeline.dataset}.{SOURCE}_latest")
    assert view.description and view.description.startswith("The newest row of each id")

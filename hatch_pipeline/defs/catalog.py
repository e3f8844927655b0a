"""What the Dagster catalog shows of a source's tables: Dagster's standard metadata (`dagster/column_schema`,
`dagster/row_count`, `dagster/table_name`, `dagster/uri`), which the UI's Columns and Row count, the catalog's search
and column lineage read, built from schemas.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import dagster as dg

from hatch_pipeline.contract import DataSource
from hatch_pipeline.schemas import (
    COLUMN_DESCRIPTIONS,
    LINEAGE_COLUMNS,
    SCHEMAS,
    VENDOR_COLUMN_DESCRIPTION,
    column_dtypes,
)
from hatch_pipeline.warehouse import bigquery_type

COLUMN_SCHEMA: Final = "dagster/column_schema"
ROW_COUNT: Final = "dagster/row_count"
TABLE_NAME: Final = "dagster/table_name"
URI: Final = "dagster/uri"
"""Dagster's standard metadata keys (its TableMetadataSet / UriMetadataSet are not exported by `dagster` 1.13)."""


def column_schema(source: DataSource, columns: Sequence[str] | None = None) -> dg.TableSchema:
    """The columns with their BigQuery types and descriptions: the documented ones and the lineage columns, or
    `columns` as a build found them (vendor-added ones described as such)."""
    names = columns if columns is not None else [*SCHEMAS[source].columns, *LINEAGE_COLUMNS]
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name,
                bigquery_type(dtype),
                description=COLUMN_DESCRIPTIONS.get(name, VENDOR_COLUMN_DESCRIPTION),
            )
            for name, dtype in column_dtypes(source, names).items()
        ]
    )


def table_metadata(source: DataSource) -> dict[str, dg.TableSchema]:
    """The definition-time metadata of a source's Parquet and BigQuery assets."""
    return {COLUMN_SCHEMA: column_schema(source)}

"""Every statement the pipeline sends to BigQuery passes Google's own analyzer (ZetaSQL, set up as BigQuery: see
bigquery_analyzer.py), and the analyzer refuses what BigQuery refuses.

The statements are recorded by `BigQueryProxy` on their way from the official client to the emulator (it forwards
them unchanged) while real runs land data: a day without rows, a day before and a day after the vendor added columns
named like reserved words, and both in one range; the checks' queries ride along, and the whole-table variants of
the warehouse's counting queries are called directly. The catalog is the tables as schemas.py makes them, plus the
staging tables as the code created them (recorded by the proxy too).

The first run on a machine compiles ZetaSQL's WebAssembly module (tens of seconds, about 1 GB); later runs load it
from the user's cache folder in under a second.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Final

import pytest
from zetasql.core.exceptions import ServerError
from zetasql.core.local_service import ZetaSqlLocalService

from hatch_pipeline.contract import DataSource
from hatch_pipeline.google_clients import bigquery_client
from hatch_pipeline.schemas import LINEAGE_COLUMNS, SCHEMAS, column_dtypes
from hatch_pipeline.stages.bigquery import table_spec
from hatch_pipeline.warehouse import bigquery_columns, days_with_repeated_ids, rows_by_day
from hatch_pipeline_tests.support.bigquery_analyzer import BigQueryAnalyzer, module_cache_path, start_zetasql
from hatch_pipeline_tests.support.bigquery_proxy import BigQueryProxy
from hatch_pipeline_tests.support.pipeline_fixtures import SOURCES, YESTERDAY, Pipeline, keys_of

RESERVED_WORD_COLUMNS: Final = ("from", "to", "end", "hash")
"""Vendor columns named like BigQuery's reserved words."""


@pytest.fixture(scope="session")
def zetasql() -> ZetaSqlLocalService:
    """ZetaSQL, loaded once per test session (and compiled once per machine)."""
    return start_zetasql(module_cache_path())


@pytest.fixture
def proxy(pipeline: Pipeline) -> Iterator[BigQueryProxy]:
    with BigQueryProxy(pipeline.local_gcp.bigquery_endpoint) as running:
        yield running


def documented_tables(pipeline: Pipeline, vendor_columns: Sequence[str] = ()) -> dict[str, dict[str, str]]:
    """Each source's table as schemas.py types it, with `vendor_columns` added as text, as parsing keeps them."""
    return {
        table_spec(source, pipeline.local_gcp.project, pipeline.dataset).table_id: bigquery_columns(
            column_dtypes(source, [*SCHEMAS[source].columns, *LINEAGE_COLUMNS, *vendor_columns])
        )
        for source in SOURCES
    }


def test_every_statement_the_pipeline_sends_passes_googles_analyzer(
    pipeline: Pipeline, proxy: BigQueryProxy, zetasql: ZetaSqlLocalService
) -> None:
    through_proxy = dataclasses.replace(
        pipeline, local_gcp=dataclasses.replace(pipeline.local_gcp, bigquery_endpoint=proxy.endpoint)
    )
    empty, before, after = (YESTERDAY - timedelta(days=days) for days in (2, 1, 0))
    config = pipeline.sandbox.config
    pipeline.sandbox.config = dataclasses.replace(config, empty_days=frozenset({empty}))
    through_proxy.materialize(empty, empty)  # creates the tables; replaces a day with no files
    through_proxy.materialize(before, before, keys_of("raw", "parquet"))
    pipeline.sandbox.config = dataclasses.replace(config, extra_columns=RESERVED_WORD_COLUMNS)
    # Adds the columns (ALTER TABLE), then replaces two days from two column sets (two staging tables).
    through_proxy.materialize(before, after)
    client = bigquery_client(pipeline.local_gcp.project, pipeline.local_gcp.location, proxy.endpoint)
    for source in SOURCES:
        spec = table_spec(source, pipeline.local_gcp.project, pipeline.dataset)
        rows_by_day(client, spec)  # the whole table, as the checks count it in a run without partitions
        days_with_repeated_ids(client, spec, SCHEMAS[source].natural_id)

    tables = {table.table_id: table.columns for table in proxy.created_tables}
    analyzer = BigQueryAnalyzer(zetasql, {**tables, **documented_tables(pipeline, RESERVED_WORD_COLUMNS)})
    refused, kinds = [], set()
    for query in proxy.queries:
        try:
            kinds.update(analyzer.analyze(query.sql, query.parameter_types))
        except ServerError as error:
            refused.append(f"{error}\n{query.sql}")

    assert refused == []
    # The runs sent every kind of statement the warehouse writes, reserved-word columns and parameters included.
    assert kinds == {
        "ResolvedQueryStmt",
        "ResolvedAlterTableStmt",
        "ResolvedCreateViewStmt",
        "ResolvedBeginStmt",
        "ResolvedDeleteStmt",
        "ResolvedInsertStmt",
        "ResolvedCommitStmt",
    }
    inserts = [query.sql for query in proxy.queries if "INSERT INTO" in query.sql]
    assert any(all(f"`{name}`" in sql for name in RESERVED_WORD_COLUMNS) for sql in inserts)
    assert any(query.parameter_types for query in proxy.queries)
    assert any(query.dry_run for query in proxy.queries)


TABLE: Final[DataSource] = "contact_history"


@pytest.mark.parametrize(
    ("accepted", "refused", "message"),
    [
        ("SELECT * EXCEPT (`_loaded_at`) FROM {t}", "SELECT * EXCLUDE (`_loaded_at`) FROM {t}", "Syntax error"),
        ("SELECT CAST(`_export_date` AS STRING) FROM {t}", "SELECT `_export_date`::STRING FROM {t}", "Syntax error"),
        ("SELECT 1 FROM {t} WHERE `email` LIKE '%a%'", "SELECT 1 FROM {t} WHERE `email` ILIKE '%a%'", "Syntax error"),
        ("SELECT `email` FROM {t}", "SELECT `e_mail` FROM {t}", "Unrecognized name: e_mail"),
        (
            "SELECT 1 FROM {t} WHERE `_export_date` = DATE '2026-12-01'",
            "SELECT 1 FROM {t} WHERE `_export_date` = 20261201",
            "No matching signature for operator = for argument types: DATE, INT64",
        ),
    ],
    ids=["duckdb-exclude", "duckdb-cast", "duckdb-ilike", "unknown-column", "date-vs-int64"],
)
def test_the_analyzer_refuses_what_bigquery_refuses(
    pipeline: Pipeline, zetasql: ZetaSqlLocalService, accepted: str, refused: str, message: str
) -> None:
    """Each refused statement beside its BigQuery spelling, which passes: the catalog and setup are not the cause."""
    analyzer = BigQueryAnalyzer(zetasql, documented_tables(pipeline))
    table = table_spec(TABLE, pipeline.local_gcp.project, pipeline.dataset).fqn

    assert analyzer.analyze(accepted.format(t=table)) == ["ResolvedQueryStmt"]
    with pytest.raises(ServerError, match=message):
        analyzer.analyze(refused.format(t=table))

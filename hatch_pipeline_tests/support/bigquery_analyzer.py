"""Google's ZetaSQL analyzer (PyPI `zetasql`: ZetaSQL compiled to WebAssembly, run offline by wasmtime), set up to
judge SQL as BigQuery does: all released language features, external product mode, the statement kinds the pipeline
sends (queries, DML, DDL, BEGIN/COMMIT), tables registered under their backticked `project.dataset.table` names and
query parameters typed.

bqemulator runs SQL on DuckDB: it accepts SQL BigQuery refuses and refuses some it accepts, so a green run against
it proves little about the SQL. ZetaSQL is the analyzer BigQuery's own SQL dialect is built on.

Compiling the 28 MB module takes tens of seconds and about 1 GB (measured: 17 s on two cores, 1.1 GB), so the
compiled module is kept under the user's cache folder, keyed by the zetasql and wasmtime versions; later starts
deserialize it in under a second.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final
from unittest import mock

import wasmtime
from zetasql.api import Analyzer, CatalogBuilder, TableBuilder
from zetasql.core import wasm_client
from zetasql.core.local_service import ZetaSqlLocalService
from zetasql.types import (
    AnalyzerOptions,
    ArrayType,
    LanguageOptions,
    ParseResumeLocation,
    SimpleCatalog,
    Type,
    TypeKind,
    ZetaSQLBuiltinFunctionOptions,
)
from zetasql.types.proto_model import ProductMode, ResolvedNodeKind

BIGQUERY_STATEMENT_KINDS: Final = (
    ResolvedNodeKind.RESOLVED_QUERY_STMT,
    ResolvedNodeKind.RESOLVED_INSERT_STMT,
    ResolvedNodeKind.RESOLVED_UPDATE_STMT,
    ResolvedNodeKind.RESOLVED_DELETE_STMT,
    ResolvedNodeKind.RESOLVED_MERGE_STMT,
    ResolvedNodeKind.RESOLVED_CREATE_TABLE_STMT,
    ResolvedNodeKind.RESOLVED_CREATE_TABLE_AS_SELECT_STMT,
    ResolvedNodeKind.RESOLVED_CREATE_VIEW_STMT,
    ResolvedNodeKind.RESOLVED_ALTER_TABLE_STMT,
    ResolvedNodeKind.RESOLVED_DROP_STMT,
    ResolvedNodeKind.RESOLVED_BEGIN_STMT,
    ResolvedNodeKind.RESOLVED_COMMIT_STMT,
    ResolvedNodeKind.RESOLVED_ROLLBACK_STMT,
)
"""ZetaSQL accepts only queries unless told otherwise; BigQuery also runs DML, DDL and transactions."""

_TYPE_KINDS: Final = {
    "STRING": TypeKind.TYPE_STRING,
    "INT64": TypeKind.TYPE_INT64,
    "FLOAT64": TypeKind.TYPE_DOUBLE,
    "BOOL": TypeKind.TYPE_BOOL,
    "DATE": TypeKind.TYPE_DATE,
    "TIMESTAMP": TypeKind.TYPE_TIMESTAMP,
}
"""BigQuery's names of the types the pipeline writes and binds, and ZetaSQL's (FLOAT64 is DOUBLE there)."""


def module_cache_path() -> Path:
    """Where the compiled module is kept: a serialized module only loads into the wasmtime version and engine
    settings that made it, and the engine settings are zetasql's, so both versions name the file."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "hatch-pipeline" / f"zetasql-{version('zetasql')}-wasmtime-{version('wasmtime')}.cwasm"


def start_zetasql(cache: Path) -> ZetaSqlLocalService:
    """The analyzer service, from the compiled module in `cache` (compiled and stored there first when missing or
    unusable, e.g. made on another CPU).

    zetasql compiles its module inside `WasmClient.__init__` with `Module.from_file` and has no cache of its own;
    the patch swaps in the cached module at that one call, and the service becomes the library's singleton, which
    its helpers (e.g. `LanguageOptions.maximum_features`) use.
    """

    class CachedModule:
        @staticmethod
        def from_file(engine: wasmtime.Engine, path: str) -> wasmtime.Module:
            if cache.exists():
                try:
                    return wasmtime.Module.deserialize_file(engine, str(cache))
                except wasmtime.WasmtimeError:
                    pass  # made by another CPU or build: compile again below
            module = wasmtime.Module.from_file(engine, path)
            cache.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=cache.parent, suffix=".part", delete=False) as part:
                part.write(module.serialize())
            os.replace(part.name, cache)  # whole or not at all, also with two test processes at once
            return module

    with mock.patch.object(wasm_client, "Module", CachedModule):
        service = ZetaSqlLocalService()
    ZetaSqlLocalService._instance = service
    return service


def parameter_type(rest_type: Mapping[str, Any]) -> Type:
    """A query parameter's ZetaSQL type from its REST form, e.g. `{"type": "ARRAY", "arrayType": {"type": "DATE"}}`."""
    if rest_type["type"] == "ARRAY":
        element = parameter_type(rest_type["arrayType"])
        return Type(type_kind=TypeKind.TYPE_ARRAY, array_type=ArrayType(element_type=element))
    return Type(type_kind=_TYPE_KINDS[rest_type["type"]])


class BigQueryAnalyzer:
    """Analyzes SQL as BigQuery would against `tables` (`project.dataset.table` -> column -> BigQuery type)."""

    def __init__(self, service: ZetaSqlLocalService, tables: Mapping[str, Mapping[str, str]]) -> None:
        self._service = service
        self._language = LanguageOptions.maximum_features()
        self._language.product_mode = ProductMode.PRODUCT_EXTERNAL
        self._language.supported_statement_kinds = list(BIGQUERY_STATEMENT_KINDS)
        catalog = CatalogBuilder("bigquery").with_builtin_functions(
            ZetaSQLBuiltinFunctionOptions(language_options=self._language)
        )
        for table_id, columns in tables.items():
            # Registered under the whole dotted name: ZetaSQL reads a backticked `p.d.t` as one identifier.
            table = TableBuilder(table_id)
            for name, kind in columns.items():
                table.add_column(name, _TYPE_KINDS[kind])
            catalog.add_table(table.build())
        self._catalog: SimpleCatalog = catalog.build()

    def analyze(self, sql: str, parameter_types: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
        """The kinds of `sql`'s statements (one statement or a script), e.g. `ResolvedInsertStmt`; raises zetasql's
        `ServerError` with ZetaSQL's message at the first statement BigQuery would refuse."""
        parameters = [
            AnalyzerOptions.QueryParameter(name=name, type=parameter_type(rest_type))
            for name, rest_type in (parameter_types or {}).items()
        ]
        analyzer = Analyzer(
            AnalyzerOptions(language_options=self._language, query_parameters=parameters),
            self._catalog,
            service=self._service,
        )
        text = sql.encode()
        location = ParseResumeLocation(input=sql, byte_position=0)
        kinds = []
        while text[location.byte_position :].strip():
            kinds.append(type(analyzer.analyze_next_statement(location)).__name__)
        return kinds

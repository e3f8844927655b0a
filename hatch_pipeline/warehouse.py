"""BigQuery tables for the Hatch sources: DDL, staged loads that replace whole days atomically, the latest-row view.

Each source S lands in `project.dataset.S`, partitioned by day on `_export_date` and clustered on its natural id.
A range of days is replaced in one transaction from staging tables (one per column set, as the vendor adds
columns over time), so a day is never half-written and running a load again gives the same table. Plain functions
over a `google.cloud.bigquery.Client`, no Dagster.

Everything here runs the same on real BigQuery and on the local bqemulator. Where the emulator diverges, the
nearest construct that works on both was chosen, and the comment at that spot says what the emulator does.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Final

import polars as pl
from google.api_core.exceptions import (
    BadGateway,
    Conflict,
    Forbidden,
    GatewayTimeout,
    GoogleAPICallError,
    InternalServerError,
    NotFound,
    RetryError,
    ServiceUnavailable,
    TooManyRequests,
)
from google.cloud import bigquery

from hatch_pipeline.column_names import NAME_PATTERN

PARTITION_COLUMN: Final = "_export_date"
LATEST_TIE_BREAKERS: Final = ("_loaded_at", "_source_file")
"""Lineage columns that decide, newest first, between rows of one id with the same order value."""

BIGQUERY_TYPES: Final = frozenset({"STRING", "INT64", "FLOAT64", "BOOL", "TIMESTAMP", "DATE"})
"""The column types this module writes; `bigquery_type` maps polars dtypes onto them."""

_POLARS_TO_BIGQUERY: Final[tuple[tuple[type[pl.DataType], str], ...]] = (
    (pl.String, "STRING"),
    (pl.Int64, "INT64"),
    (pl.Float64, "FLOAT64"),
    (pl.Boolean, "BOOL"),
    (pl.Date, "DATE"),
)
_TIMESTAMP_UNITS: Final = frozenset({"ms", "us"})
# The REST API reports legacy type names; compare in standard SQL names.
_STANDARD_TYPE_NAMES: Final = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}

_PROJECT_ID = re.compile(r"(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]*[a-z0-9]")
_DATASET_ID = re.compile(r"[A-Za-z0-9_]{1,1024}")
_STAGING_EXPIRY = timedelta(days=1)

TRANSIENT_REASONS: Final = frozenset(
    {
        "backendError",
        "internalError",
        "badGateway",
        "rateLimitExceeded",
        "jobBackendError",
        "jobInternalError",
        "jobRateLimitExceeded",
    }
)
"""BigQuery error reasons that pass by waiting (those Google's client retries by itself). Not `quotaExceeded`:
BigQuery's quotas are mostly per day, so minutes of waiting do not help."""
TRANSIENT_MESSAGES: Final = ("transaction is aborted due to concurrent update", "could not serialize access to table")
"""How BigQuery says that another transaction or DML statement changed the table first (HTTP 400, `invalidQuery`):
the same statements succeed when run again."""
_TRANSIENT_TYPES: Final = (TooManyRequests, InternalServerError, BadGateway, ServiceUnavailable, GatewayTimeout)
"""429 and the 5xx that pass; not 501 Not Implemented, which the client also maps job errors (`notImplemented`) to."""


class WarehouseError(Exception):
    """A warehouse step cannot go ahead; the message says why and what to do."""


class SchemaConflict(WarehouseError):
    """A column already exists in the table with another type (columns are never retyped or dropped)."""


class RowsOutsideDays(WarehouseError):
    """The staged Parquet holds rows for days that are not being replaced; loading them would duplicate rows."""


class LoadFailed(WarehouseError):
    """BigQuery refused the Parquet files; the target table was not touched."""


class ParquetReplaced(WarehouseError):
    """A newer Parquet build retired the manifest or the files a load was reading. `is_transient` counts it as
    transient: the same load over the newest manifest's files succeeds once builds stop overtaking it."""


class MissingColumns(WarehouseError):
    """The Parquet files hold columns the table lacks; `ensure_table` adds them."""


@dataclass(frozen=True)
class TableDocs:
    """Descriptions and labels a table carries in BigQuery. Set when the table is created (columns added later get
    theirs then); the view's description each time the view is replaced."""

    description: str = ""
    columns: Mapping[str, str] = field(default_factory=dict)
    """Column name -> description; a column without one gets none."""
    labels: Mapping[str, str] = field(default_factory=dict)
    view_description: str = ""


@dataclass(frozen=True, kw_only=True)
class TableSpec:
    """Where a source's table lives and how it is laid out. Every name is checked, as it is spliced into SQL."""

    project: str
    dataset: str
    table: str
    partition_column: str = PARTITION_COLUMN
    cluster_column: str
    docs: TableDocs = field(default_factory=lambda: TableDocs())
    """What the table, its columns and its `_latest` view say they hold (shown in BigQuery's console and catalog)."""

    def __post_init__(self) -> None:
        _check_project_and_dataset(self.project, self.dataset)
        for name in (self.table, self.partition_column, self.cluster_column):
            _check_name(name)

    @property
    def table_id(self) -> str:
        """`project.dataset.table`, as the client library's methods take it."""
        return f"{self.project}.{self.dataset}.{self.table}"

    @property
    def partition(self) -> str:
        """The partition column, quoted for SQL."""
        return quoted(self.partition_column)

    @property
    def fqn(self) -> str:
        """The backticked name for SQL: `project.dataset.table`."""
        return f"`{self.table_id}`"

    @property
    def latest_view(self) -> TableSpec:
        """The view holding the newest row per natural id: `S_latest` beside the table."""
        return replace(self, table=f"{self.table}_latest")

    def staging(self, run_id: str) -> TableSpec:
        """A fresh staging table beside the target, named after the run (and unique if the run retries)."""
        run = re.sub(r"[^A-Za-z0-9_]", "_", run_id)[:64]
        return replace(self, table=f"{self.table}__staging_{run}_{secrets.token_hex(4)}")


@dataclass(frozen=True)
class ParquetGroup:
    """Parquet files that all hold exactly `columns`, in this order: one staging table and one load job for all.

    Files are grouped by column set because bqemulator loads Parquet by position (BigQuery by name): files
    written before and after the vendor added a column need staging tables of their own.
    """

    uris: tuple[str, ...]
    columns: Mapping[str, str]
    hive_prefix: str | None = None
    """The gs:// prefix the files' `key=value/` folders follow (e.g. `.../export_date=2026-11-25/`). The load
    then reads those keys as hive partition columns, as BigQuery does when told and DuckDB (bqemulator) always
    does on its own; staging holds them as STRING after the files' columns, and the target never sees them."""

    def __post_init__(self) -> None:
        if not self.uris:
            raise ValueError("a ParquetGroup needs at least one file; leave out column sets without files")
        if self.hive_prefix is not None and not all(uri.startswith(self.hive_prefix) for uri in self.uris):
            raise ValueError(f"every file of a group with hive_prefix {self.hive_prefix!r} must lie under it")

    @property
    def hive_keys(self) -> tuple[str, ...]:
        """The partition keys in the files' folder names below `hive_prefix` (none without a prefix)."""
        if self.hive_prefix is None:
            return ()
        folders = self.uris[0].removeprefix(self.hive_prefix).strip("/").split("/")[:-1]
        return tuple(folder.split("=", 1)[0] for folder in folders if "=" in folder)


@dataclass(frozen=True)
class ReplaceResult:
    """What one `replace_days` call did, for Dagster metadata and reconciliation against the Parquet counts."""

    rows_loaded: int
    rows_by_day: Mapping[date, int]
    job_ids: tuple[str, ...]

    @property
    def jobs(self) -> int:
        """BigQuery jobs this call ran: grows with the number of column sets, never with days or files."""
        return len(self.job_ids)


def is_transient(error: BaseException) -> bool:
    """Whether a failed BigQuery call can succeed when run again after a pause: another transaction changed the
    table first, a server error or a rate limit. Everything else (bad SQL, a missing table, a schema conflict, a
    quota, any `WarehouseError` of its own but `ParquetReplaced`) fails again the same way, so retrying it only
    wastes time.

    Follows explicit causes (`raise ... from`, and the last error behind the client's own `RetryError`), so a
    `LoadFailed` caused by a backend error counts as transient.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (*_TRANSIENT_TYPES, ParquetReplaced)):
            return True
        if isinstance(current, GoogleAPICallError):
            details = [detail for detail in current.errors if isinstance(detail, Mapping)]
            if any(detail.get("reason") in TRANSIENT_REASONS for detail in details):
                return True
            text = " ".join([current.message or "", *(str(detail.get("message", "")) for detail in details)]).lower()
            if any(message in text for message in TRANSIENT_MESSAGES):
                return True
        current = current.cause if isinstance(current, RetryError) else current.__cause__
    return False


def bigquery_type(dtype: pl.DataType) -> str:
    """The BigQuery column type that holds a polars column of `dtype` when loaded from Parquet."""
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone != "UTC" or dtype.time_unit not in _TIMESTAMP_UNITS:
            raise TypeError(
                f"{dtype} has no BigQuery type here; TIMESTAMP columns must be Datetime('us', 'UTC'): "
                "convert with .dt.convert_time_zone('UTC') (or .dt.replace_time_zone('UTC') for naive values) "
                "and .dt.cast_time_unit('us')"
            )
        return "TIMESTAMP"
    for polars_type, bigquery_name in _POLARS_TO_BIGQUERY:
        if dtype == polars_type:
            return bigquery_name
    raise TypeError(
        f"polars dtype {dtype} has no BigQuery type here; cast the column to one of "
        "String, Int64, Float64, Boolean, Date or Datetime('us', 'UTC')"
    )


def bigquery_columns(schema: Mapping[str, pl.DataType]) -> dict[str, str]:
    """Column name to BigQuery type for a polars schema, in the schema's order (the Parquet files' order)."""
    columns: dict[str, str] = {}
    for name, dtype in schema.items():
        try:
            columns[name] = bigquery_type(dtype)
        except TypeError as error:
            raise TypeError(f"column {name!r}: {error}") from None
    return columns


def quoted(name: str) -> str:
    """`name` in backticks, as every column name spliced into SQL here is written.

    Vendors name columns `from`, `to`, `end`, `hash` or `range`, which BigQuery reserves: bare, such a name breaks
    the statement (and every later load of the table); quoted, it is a plain name. A name that could end the quotes
    (a backtick, a backslash, a line break) is refused with the rules a name must follow, as `column_name_problem`
    refuses it in parsing.
    """
    _check_name(name)
    return f"`{name}`"


def ensure_dataset(client: bigquery.Client, project: str, dataset: str, location: str) -> None:
    """Look the dataset up and create it only when it is missing; refuse one that lives elsewhere (jobs could not
    span both locations).

    Looking up first keeps the needed rights dataset-level: creating (even with exists_ok) asks for
    bigquery.datasets.create on the project, which a least-privilege deployment does not grant.
    """
    _check_project_and_dataset(project, dataset)
    try:
        existing = client.get_dataset(f"{project}.{dataset}")
    except NotFound:
        wanted = bigquery.Dataset(f"{project}.{dataset}")
        wanted.location = location
        try:
            existing = client.create_dataset(wanted, exists_ok=True)
        except Forbidden as error:
            raise WarehouseError(
                f"dataset {project}.{dataset} does not exist and these credentials may not create it "
                f"({error.message}); create it in location {location} "
                f"(bq mk --location={location} {project}:{dataset}) or grant bigquery.datasets.create on the project"
            ) from None
    if existing.location and existing.location.upper() != location.upper():
        raise WarehouseError(
            f"dataset {project}.{dataset} already exists in location {existing.location}, not {location}; "
            f"set HATCH_BQ_LOCATION={existing.location} or choose another HATCH_BQ_DATASET"
        )


def ensure_table(client: bigquery.Client, spec: TableSpec, columns: Mapping[str, str]) -> list[str]:
    """Create the partitioned, clustered table, or add the columns it lacks; return the names of added columns.

    The table is created even for a range without rows, so views and checks always find it. Existing columns are
    never dropped or retyped: a column whose type changed raises `SchemaConflict`.
    """
    _check_columns(spec, columns)
    table = bigquery.Table(spec.table_id, schema=_schema(columns, spec.docs.columns))
    table.description = spec.docs.description or None
    table.labels = dict(spec.docs.labels)
    table.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY, field=spec.partition_column
    )
    table.clustering_fields = [spec.cluster_column]
    # The tables API rather than `CREATE TABLE ... PARTITION BY ... CLUSTER BY` DDL: both mean the same on
    # BigQuery, but bqemulator 1.4.0 drops CLUSTER BY from DDL (the table reports no clustering), while it keeps
    # the clustering and partitioning given through the API.
    try:
        client.create_table(table)
        return []
    except Conflict:
        pass  # the table exists: bring its columns up to date
    _check_partitioning(client.get_table(spec.table_id), spec)
    existing = table_columns(client, spec)
    conflicts = [
        f"{name} is {existing[name]} in the table but {kind} in the new data"
        for name, kind in columns.items()
        if name in existing and existing[name] != kind
    ]
    if conflicts:
        raise SchemaConflict(
            f"{spec.table_id}: {'; '.join(conflicts)}. Columns are never retyped: cast the new data to the table's "
            "type in parsing, or migrate the table by hand"
        )
    added = [name for name in columns if name not in existing]
    if added:
        # One ALTER per column in one script: bqemulator allows a single ALTER action per statement.
        _run_query(
            client,
            "\n".join(
                f"ALTER TABLE {spec.fqn} ADD COLUMN IF NOT EXISTS {quoted(name)} {columns[name]};" for name in added
            ),
        )
    return added


def table_columns(client: bigquery.Client, spec: TableSpec) -> dict[str, str]:
    """The table's columns and their standard SQL types, as queries see them.

    Read from a dry run's result schema (free on BigQuery): bqemulator's table metadata and its
    INFORMATION_SCHEMA.COLUMNS both miss columns added by ALTER TABLE, although queries see them.
    """
    job = client.query(f"SELECT * FROM {spec.fqn}", job_config=bigquery.QueryJobConfig(dry_run=True))
    return {column.name: _STANDARD_TYPE_NAMES.get(column.field_type, column.field_type) for column in job.schema or ()}


def replace_days(
    client: bigquery.Client,
    spec: TableSpec,
    *,
    groups: Sequence[ParquetGroup],
    days: Sequence[date],
    run_id: str,
) -> ReplaceResult:
    """Make exactly `days` of the table hold the rows of all `groups`' files, atomically.

    Each group is loaded into a staging table of its own, so files with different column sets can replace one
    range together; the staged days are counted in one query, and rows outside `days` are refused before the
    table is touched. One transaction then deletes the days and inserts every group's rows by column name
    (columns a group lacks stay NULL), then counts the days as committed. The staging tables are dropped
    afterwards, also on failure. A day without rows in the files ends up empty.

    The table must already have every group's columns (`ensure_table`, which also refuses retyped columns);
    a missing one raises `MissingColumns` before anything runs. Groups with the same columns are loaded together.
    Jobs: one load per column set plus two (count the staged days, the transaction), or one without groups; never
    more for more days or files.
    """
    # Plain dates, sorted and unique: the transaction's SQL spells them out (see _replace_script).
    replaced = sorted({date(day.year, day.month, day.day) for day in days})
    if not replaced:
        raise ValueError("replace_days needs at least one day to replace; pass the partition range's days")
    merged = _merge_groups(spec, groups)
    jobs = _JobRunner(client, run_id)
    if not merged:
        committed = _count_rows_by_day(jobs.query(_replace_script(spec, replaced, [])))
        return ReplaceResult(rows_loaded=0, rows_by_day=_per_day(committed, replaced), job_ids=jobs.ids)
    _check_table_has_columns(client, spec, merged)
    with ExitStack() as stack:
        staged_groups = [(stack.enter_context(_staging_table(client, spec, group, run_id)), group) for group in merged]
        for staging, group in staged_groups:
            jobs.load(group, staging)
        staged = _count_rows_by_day(jobs.query(_count_staged_sql(spec, [staging for staging, _ in staged_groups])))
        outside = sorted("NULL" if day is None else day.isoformat() for day in staged if day not in replaced)
        if outside:
            raise RowsOutsideDays(
                f"the Parquet files for {spec.table_id} hold rows for {', '.join(outside)}, outside the days being "
                f"replaced ({replaced[0]}..{replaced[-1]}); nothing was changed. Pass those days too, or fix the "
                f"{spec.partition_column} values written in parsing"
            )
        committed = _count_rows_by_day(jobs.query(_replace_script(spec, replaced, staged_groups)))
    return ReplaceResult(rows_loaded=sum(staged.values()), rows_by_day=_per_day(committed, replaced), job_ids=jobs.ids)


def rows_by_day(client: bigquery.Client, spec: TableSpec, days: Sequence[date] | None = None) -> dict[date, int]:
    """Rows the table holds for each of `days` (zero for empty days), from one GROUP BY query; with `days` None,
    for every day it holds rows for. A table that does not exist holds none."""
    where, parameters = _days_filter(spec, days)
    try:
        counts = _count_rows_by_day(_run_query(client, _count_by_day_sql(spec, where), parameters))
    except NotFound:
        counts = {}
    if days is None:
        return dict(sorted((day, rows) for day, rows in counts.items() if day is not None))
    return _per_day(counts, days)


@dataclass(frozen=True)
class IdCounts:
    """One day's rows against its distinct natural ids."""

    rows: int
    distinct_ids: int
    null_ids: int

    @property
    def duplicates(self) -> int:
        """Rows beyond the first of their id (rows without an id not counted)."""
        return self.rows - self.null_ids - self.distinct_ids


def days_with_repeated_ids(
    client: bigquery.Client, spec: TableSpec, id_column: str, days: Sequence[date] | None = None
) -> dict[date, IdCounts]:
    """The days (of `days`, or of the whole table) holding an id on more than one row, or rows without an id, from
    one GROUP BY query; nothing for a table that does not exist."""
    id_ = quoted(id_column)
    where, parameters = _days_filter(spec, days)
    sql = (
        f"SELECT {spec.partition} AS `day`, COUNT(*) AS `row_count`, COUNT(DISTINCT {id_}) AS `ids`, "
        f"COUNTIF({id_} IS NULL) AS `null_ids` FROM {spec.fqn} WHERE {where} GROUP BY `day` "
        f"HAVING COUNT(*) > COUNT(DISTINCT {id_})"
    )
    try:
        rows = _run_query(client, sql, parameters)
    except NotFound:
        return {}
    return {
        row["day"]: IdCounts(rows=row["row_count"], distinct_ids=row["ids"], null_ids=row["null_ids"])
        for row in rows
        if row["day"] is not None
    }


def _days_filter(spec: TableSpec, days: Sequence[date] | None) -> tuple[str, list[bigquery.ArrayQueryParameter]]:
    """A WHERE condition on the partition column for `days` (every day when None), and its query parameters."""
    if days is None:
        return "TRUE", []
    return f"{spec.partition} IN UNNEST(@days)", [bigquery.ArrayQueryParameter("days", "DATE", list(days))]


def ensure_latest_view(
    client: bigquery.Client, spec: TableSpec, *, id_column: str, order_column: str = "updated_at"
) -> None:
    """Create or replace the view `S_latest`: one row per `id_column`, the one with the newest `order_column`.

    Rows with equal `order_column` are ordered by the newest export day, then `_loaded_at` and `_source_file`,
    so the view picks the same row every time. Rows without an `order_column` value come last. BigQuery expands
    the view's `SELECT *` when the view is created: call this again after `ensure_table` added columns.
    """
    partition_by = quoted(id_column)
    ordering = [f"{quoted(order_column)} DESC NULLS LAST", f"{spec.partition} DESC"]
    ordering += [f"{quoted(column)} DESC" for column in LATEST_TIE_BREAKERS]
    needed = [id_column, order_column, spec.partition_column, *LATEST_TIE_BREAKERS]
    existing = table_columns(client, spec)
    missing = [name for name in needed if name not in existing]
    if missing:
        raise WarehouseError(
            f"{spec.table_id} has no column {', '.join(missing)}, which the {spec.latest_view.table} view needs; "
            "load data with those columns first (parsing adds the lineage columns)"
        )
    _run_query(
        client,
        f"""CREATE OR REPLACE VIEW {spec.latest_view.fqn} AS
SELECT * EXCEPT (`_latest_rank`)
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY {partition_by} ORDER BY {", ".join(ordering)}) AS `_latest_rank`
  FROM {spec.fqn}
)
WHERE `_latest_rank` = 1""",
    )
    if spec.docs.view_description:
        # Set after each CREATE OR REPLACE, which starts the view without one.
        view = client.get_table(spec.latest_view.table_id)
        view.description = spec.docs.view_description
        client.update_table(view, ["description"])


class _JobRunner:
    """Runs BigQuery jobs to completion, labelled with the run, and keeps their ids so callers can count them."""

    def __init__(self, client: bigquery.Client, run_id: str) -> None:
        self._client = client
        # Label values: at most 63 lowercase letters, digits, '-' or '_'.
        self._labels = {"hatch_run_id": re.sub(r"[^a-z0-9_-]", "_", run_id.lower())[:63]}
        self._ids: list[str] = []

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._ids)

    def query(self, sql: str) -> bigquery.table.RowIterator:
        job = self._client.query(sql, job_config=bigquery.QueryJobConfig(labels=self._labels))
        self._ids.append(job.job_id)
        return job.result()

    def load(self, group: ParquetGroup, destination: TableSpec) -> None:
        uris = group.uris
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_EMPTY,
            labels=self._labels,
        )
        if group.hive_prefix is not None:
            hive = bigquery.HivePartitioningOptions()
            hive.mode = "STRINGS"
            hive.source_uri_prefix = group.hive_prefix
            config.hive_partitioning = hive
        job = self._client.load_table_from_uri(list(uris), destination.table_id, job_config=config)
        self._ids.append(job.job_id)
        try:
            job.result()
        except GoogleAPICallError as error:
            raise LoadFailed(
                f"BigQuery could not load {len(uris)} Parquet file(s) ({uris[0]}{', ...' if len(uris) > 1 else ''}) "
                f"into staging for {destination.project}.{destination.dataset}, so nothing was replaced: "
                f"{error.message}. Re-run the Parquet stage for these days if the files are missing or damaged"
            ) from error


def _replace_script(
    spec: TableSpec, days: Sequence[date], staged_groups: Sequence[tuple[TableSpec, ParquetGroup]]
) -> str:
    """One transaction: delete `days`, insert each staging table's rows by column name; all of it happens or none.
    Then count the days as committed: a script's result is its last statement's.

    The days are written as DATE literals rather than bound as `@days`: bqemulator runs multi-statement scripts
    without query parameters ("Values were not provided for ... days"). The literals come from `date` objects
    only, so no text from outside reaches the SQL, and the statement count stays the same for any number of days.
    """
    day_literals = ", ".join(f"DATE '{day.isoformat()}'" for day in days)
    in_days = f"{spec.partition} IN UNNEST([{day_literals}])"
    statements = ["BEGIN TRANSACTION;", f"DELETE FROM {spec.fqn} WHERE {in_days};"]
    for staging, group in staged_groups:
        names = ", ".join(quoted(name) for name in group.columns)
        statements.append(f"INSERT INTO {spec.fqn} ({names}) SELECT {names} FROM {staging.fqn};")
    statements += ["COMMIT TRANSACTION;", f"{_count_by_day_sql(spec, in_days)};"]
    return "\n".join(statements)


def _merge_groups(spec: TableSpec, groups: Sequence[ParquetGroup]) -> list[ParquetGroup]:
    """The groups checked, with groups of identical columns (names, order, types) merged into one load."""
    by_columns: dict[tuple[tuple[str, str], ...], ParquetGroup] = {}  # columns and hive prefix -> group
    seen_uris: set[str] = set()
    for group in groups:
        _check_columns(spec, group.columns)
        for uri in group.uris:
            if uri in seen_uris:
                raise ValueError(f"{uri} is passed more than once, so its rows would be loaded twice; pass it once")
            seen_uris.add(uri)
        key = (*group.columns.items(), ("", group.hive_prefix or ""))
        earlier = by_columns.get(key)
        by_columns[key] = group if earlier is None else replace(group, uris=(*earlier.uris, *group.uris))
    return list(by_columns.values())


def _check_table_has_columns(client: bigquery.Client, spec: TableSpec, groups: Sequence[ParquetGroup]) -> None:
    """Refuse before any job runs if a group holds a column the table lacks: its INSERT would fail anyway."""
    existing = table_columns(client, spec)
    missing = [*dict.fromkeys(name for group in groups for name in group.columns if name not in existing)]
    if missing:
        raise MissingColumns(
            f"{spec.table_id} has no column {', '.join(missing)}, which the Parquet files hold; nothing was changed. "
            "Call ensure_table with the union of all groups' columns before replace_days"
        )


@contextmanager
def _staging_table(client: bigquery.Client, spec: TableSpec, group: ParquetGroup, run_id: str) -> Iterator[TableSpec]:
    """An empty table with the group's columns beside the target for the duration of the block, dropped afterwards."""
    staging = spec.staging(run_id)
    hive_columns = dict.fromkeys(group.hive_keys, "STRING")
    table = bigquery.Table(staging.table_id, schema=_schema({**group.columns, **hive_columns}, {}))
    table.expires = datetime.now(UTC) + _STAGING_EXPIRY  # BigQuery's safety net if the drop below never runs
    client.create_table(table)  # bqemulator cannot load into a table that does not exist yet
    try:
        yield staging
    finally:
        client.delete_table(staging.table_id, not_found_ok=True)


def _count_staged_sql(spec: TableSpec, stagings: Sequence[TableSpec]) -> str:
    """Rows per day over all staging tables in one query, so checking them costs one job whatever the groups."""
    union = " UNION ALL ".join(f"SELECT {spec.partition} AS `day` FROM {staging.fqn}" for staging in stagings)
    return f"SELECT `day`, COUNT(*) AS `row_count` FROM ({union}) GROUP BY `day`"


def _count_by_day_sql(spec: TableSpec, where: str) -> str:
    return f"SELECT {spec.partition} AS `day`, COUNT(*) AS `row_count` FROM {spec.fqn} WHERE {where} GROUP BY `day`"


def _count_rows_by_day(rows: bigquery.table.RowIterator) -> dict[date | None, int]:
    return {row["day"]: row["row_count"] for row in rows}


def _per_day(counts: Mapping[date | None, int], days: Sequence[date]) -> dict[date, int]:
    return {day: counts.get(day, 0) for day in days}


def _run_query(
    client: bigquery.Client, sql: str, parameters: Sequence[bigquery.ArrayQueryParameter] = ()
) -> bigquery.table.RowIterator:
    return client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=list(parameters))).result()


def _schema(columns: Mapping[str, str], descriptions: Mapping[str, str]) -> list[bigquery.SchemaField]:
    return [_field(name, kind, descriptions.get(name)) for name, kind in columns.items()]


def _field(name: str, kind: str, description: str | None) -> bigquery.SchemaField:
    if description is None:
        return bigquery.SchemaField(name, kind, mode="NULLABLE")
    return bigquery.SchemaField(name, kind, mode="NULLABLE", description=description)


def _check_partitioning(table: bigquery.Table, spec: TableSpec) -> None:
    partitioning = table.time_partitioning
    if partitioning is None or partitioning.field != spec.partition_column:
        actual = "not partitioned" if partitioning is None else f"partitioned on {partitioning.field}"
        raise WarehouseError(
            f"{spec.table_id} exists but is {actual}; replacing days needs it partitioned on {spec.partition_column}. "
            "Recreate it (copy the data out, drop it, re-run the load)"
        )


def _check_columns(spec: TableSpec, columns: Mapping[str, str]) -> None:
    for name, kind in columns.items():
        _check_name(name)
        if kind not in BIGQUERY_TYPES:
            raise ValueError(f"column {name!r} has type {kind!r}; use one of {', '.join(sorted(BIGQUERY_TYPES))}")
    if columns.get(spec.partition_column) != "DATE":
        raise ValueError(f"the columns must include the partition column {spec.partition_column!r} of type DATE")
    if spec.cluster_column not in columns:
        raise ValueError(f"the columns must include the clustering column {spec.cluster_column!r}")


def _check_project_and_dataset(project: str, dataset: str) -> None:
    if not _PROJECT_ID.fullmatch(project):
        raise ValueError(f"{project!r} is not a BigQuery project id (lowercase letters, digits and hyphens)")
    if not _DATASET_ID.fullmatch(dataset):
        raise ValueError(f"{dataset!r} is not a BigQuery dataset name (letters, digits and underscores)")


def _check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a usable table or column name: start with a letter or underscore, "
            "then letters, digits and underscores (at most 300)"
        )

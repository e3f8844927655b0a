"""Asset checks that can fail (their job and schedule are in jobs.py and schedules.py).

Per source: on hatch/parquet/S, `rows_match_raw` (blocking: a failure stops the BigQuery load of the run),
`refetch_not_shrunk`, `columns_match_schema` and `rows_inside_export_window` (the last two warnings); on
hatch/bigquery/S, `rows_match_parquet`, `one_row_per_id` and `yesterday_landed`. The counting is quality.py's;
this module only wires it to Dagster.

A run that materializes an asset runs its checks over the run's days. A run without a partition (the schedule's,
or one launched from a check's page) checks every stored day. Dagster records a check of a range run without a
partition, so every result names its failing days in the `failed_days` metadata.
"""

# No `from __future__ import annotations`: Dagster reads the checks' context annotations at definition time.
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any, Final

import dagster as dg
from dagster import AssetCheckExecutionContext

from hatch_pipeline.contract import DataSource
from hatch_pipeline.defs.constants import ACCEPT_SHRINK_TAG, AS_OF_TAG, REFETCH_TAG, bigquery_key, parquet_key
from hatch_pipeline.defs.resources import HatchBigQueryResource, HatchStorageResource
from hatch_pipeline.quality import (
    Finding,
    StoredDay,
    clamped_findings,
    column_drift,
    deadline_of,
    due_day,
    raw_parquet_findings,
    repeated_id_findings,
    shrink_findings,
    stored_days,
    summary,
    table_findings,
)
from hatch_pipeline.schemas import SCHEMAS
from hatch_pipeline.settings import Settings
from hatch_pipeline.stages.bigquery import table_spec
from hatch_pipeline.stages.parquet import SHRINK_LIMIT
from hatch_pipeline.warehouse import days_with_repeated_ids, quoted, rows_by_day

ROWS_MATCH_RAW: Final = "rows_match_raw"
REFETCH_NOT_SHRUNK: Final = "refetch_not_shrunk"
COLUMNS_MATCH_SCHEMA: Final = "columns_match_schema"
ROWS_INSIDE_EXPORT_WINDOW: Final = "rows_inside_export_window"
ROWS_MATCH_PARQUET: Final = "rows_match_parquet"
ONE_ROW_PER_ID: Final = "one_row_per_id"
YESTERDAY_LANDED: Final = "yesterday_landed"

_ERROR: Final = dg.AssetCheckSeverity.ERROR
_WARN: Final = dg.AssetCheckSeverity.WARN


def checked_days(context: AssetCheckExecutionContext) -> list[date] | None:
    """The run's days; None (every stored day) when the run targets no partition."""
    if context.has_partition_key or context.has_partition_key_range:
        return [date.fromisoformat(key) for key in context.partition_keys]
    return None


def build_source_checks(source: DataSource, settings: Settings) -> list[dg.AssetChecksDefinition]:
    """Every check of one data source, as `settings` (time zone, date column, HATCH_FRESH_BY) describe it."""
    return [_parquet_checks(source, settings), _table_checks(source), _yesterday_landed(source, settings)]


def _parquet_checks(source: DataSource, settings: Settings) -> dg.AssetChecksDefinition:
    asset = parquet_key(source)
    rebuild = f"Materialize {asset.to_user_string()} and then hatch/bigquery/{source} for those days"

    @dg.multi_asset_check(
        name=f"hatch__parquet__{source}__checks",
        specs=[
            dg.AssetCheckSpec(
                ROWS_MATCH_RAW,
                asset=asset,
                blocking=True,
                description=(
                    "Each day's Parquet file, counted from its stored footer, holds exactly the rows the build read "
                    "out of the day's newest stored export (for a day held from a shrink, the export it keeps). "
                    "Blocking: a failure stops the run's BigQuery load."
                ),
            ),
            dg.AssetCheckSpec(
                REFETCH_NOT_SHRUNK,
                asset=asset,
                description=(
                    f"No day's newest export holds fewer than {SHRINK_LIMIT:.0%} of the rows landed for it (a 204 "
                    "holds none): such a refetch is stored but not applied, the day keeps its rows in Parquet and "
                    "BigQuery, and this check names the day with both counts."
                ),
            ),
            dg.AssetCheckSpec(
                COLUMNS_MATCH_SCHEMA,
                asset=asset,
                description="The vendor's columns are those schemas.py documents: none new, none missing (warns).",
            ),
            dg.AssetCheckSpec(
                ROWS_INSIDE_EXPORT_WINDOW,
                asset=asset,
                description=(
                    "No row was dated outside its export's window, or undated, and so moved to the window's edge "
                    "(warns: the time zone or the date column may not match how Hatch assigns rows to days)."
                ),
            ),
        ],
        can_subset=True,
    )
    def parquet_checks(
        context: AssetCheckExecutionContext, hatch_storage: HatchStorageResource
    ) -> Iterator[dg.AssetCheckResult]:
        days = checked_days(context)
        store = hatch_storage.store()
        stored = stored_days(store, source, days)
        results = {
            ROWS_MATCH_RAW: lambda: _rows_match_raw(stored, days, rebuild),
            REFETCH_NOT_SHRUNK: lambda: _refetch_not_shrunk(source, stored, store.uri),
            COLUMNS_MATCH_SCHEMA: lambda: _columns_match_schema(source, stored),
            ROWS_INSIDE_EXPORT_WINDOW: lambda: _rows_inside_export_window(source, stored, settings),
        }
        for key in sorted(context.selected_asset_check_keys, key=lambda key: key.name):
            yield results[key.name]()

    return parquet_checks


def _rows_match_raw(stored: Mapping[date, StoredDay], days: list[date] | None, rebuild: str) -> dg.AssetCheckResult:
    checked = list(stored) if days is None else days
    findings = raw_parquet_findings(stored, checked)
    return _day_result(
        ROWS_MATCH_RAW,
        findings,
        checked=len(checked),
        passed="every Parquet file holds the rows read from its day's newest export",
        fix=(
            f"{rebuild}: the Parquet build re-reads the stored ZIPs (no export). A day without a stored export "
            "needs its raw asset first."
        ),
    )


def _refetch_not_shrunk(
    source: DataSource, stored: Mapping[date, StoredDay], uri: Callable[[str], str]
) -> dg.AssetCheckResult:
    return _day_result(
        REFETCH_NOT_SHRUNK,
        shrink_findings(stored, uri),
        checked=sum(found.published for found in stored.values()),
        passed="no landed day was replaced by a far smaller export",
        fix=(
            f"Their newest exports hold fewer than {SHRINK_LIMIT:.0%} of the rows landed (refetched_rows against "
            "landed_rows), so those days keep their landed rows. If the vendor was still refreshing or glitched, "
            f"refetch them later (run tag {REFETCH_TAG}=true): a full export replaces them and this turns green. If "
            f"the rows are really gone at Hatch, materialize hatch/parquet/{source} and hatch/bigquery/{source} for "
            f"those days with the run tag {ACCEPT_SHRINK_TAG}=true (no export)."
        ),
    )


def _columns_match_schema(source: DataSource, stored: Mapping[date, StoredDay]) -> dg.AssetCheckResult:
    drift = column_drift(stored, list(SCHEMAS[source].columns))
    problems = []
    if drift.new:
        problems.append(
            f"new column(s) {', '.join(drift.new)}: kept as text and added to the table; once Hatch documents them, "
            "add them to hatch_pipeline/schemas.py with their type"
        )
    if drift.missing:
        problems.append(
            f"missing column(s) {', '.join(drift.missing)}: null in the table on those days; ask Hatch whether they "
            "were dropped or renamed"
        )
    return dg.AssetCheckResult(
        check_name=COLUMNS_MATCH_SCHEMA,
        passed=not problems,
        severity=_WARN,
        description="; ".join(problems) or "the vendor sent exactly the documented columns",
        metadata={
            "new_columns": dg.MetadataValue.json(drift.new),
            "missing_columns": dg.MetadataValue.json(drift.missing),
            "days_checked": sum(found.vendor_columns is not None for found in stored.values()),
        },
    )


def _rows_inside_export_window(
    source: DataSource, stored: Mapping[date, StoredDay], settings: Settings
) -> dg.AssetCheckResult:
    findings = clamped_findings(stored)
    column = settings.date_column(source)
    outside = sum(found["dated_outside_window"] for found in findings.values())
    undated = sum(found["undated"] for found in findings.values())
    return _day_result(
        ROWS_INSIDE_EXPORT_WINDOW,
        findings,
        checked=sum(found.published for found in stored.values()),
        severity=_WARN,
        passed=f"every row's {column} falls inside its export's window in {settings.timezone}",
        fix=(
            f"{outside} row(s) were dated outside their export's window and {undated} undated; they were moved to "
            f"the window's edge. A row goes to the day of {column} in HATCH_TIMEZONE={settings.timezone}: if that is "
            f"not Hatch's day boundary, set HATCH_TIMEZONE to it, or HATCH_{source.upper()}_DATE_COLUMN to the "
            f"timestamp Hatch assigns days by (now {column}); then refetch and rebuild those days (run tag "
            f"{REFETCH_TAG}=true). Undated rows land on the window's last day: report them to Hatch."
        ),
        extra={"dated_outside_window": outside, "undated": undated},
    )


def _table_checks(source: DataSource) -> dg.AssetChecksDefinition:
    asset = bigquery_key(source)
    natural_id = SCHEMAS[source].natural_id

    @dg.multi_asset_check(
        name=f"hatch__bigquery__{source}__checks",
        specs=[
            dg.AssetCheckSpec(
                ROWS_MATCH_PARQUET,
                asset=asset,
                description=(
                    "The table's rows per day, counted by a query of its own, equal the rows in the day's stored "
                    "Parquet file, which equal the rows read from the raw export (all three in the metadata)."
                ),
            ),
            dg.AssetCheckSpec(
                ONE_ROW_PER_ID,
                asset=asset,
                description=f"Each day holds each {natural_id} on one row only, and no row without one.",
            ),
        ],
        can_subset=True,
    )
    def table_checks(
        context: AssetCheckExecutionContext,
        hatch_storage: HatchStorageResource,
        hatch_bigquery: HatchBigQueryResource,
    ) -> Iterator[dg.AssetCheckResult]:
        days = checked_days(context)
        spec = table_spec(source, hatch_bigquery.project or "", hatch_bigquery.dataset)
        selected = {key.name for key in context.selected_asset_check_keys}
        with hatch_bigquery.get_client() as client:
            if ROWS_MATCH_PARQUET in selected:
                stored = stored_days(hatch_storage.store(), source, days)
                table = rows_by_day(client, spec, days)
                checked = sorted(stored.keys() | table.keys()) if days is None else days
                yield _day_result(
                    ROWS_MATCH_PARQUET,
                    table_findings(stored, table, checked),
                    checked=len(checked),
                    passed="the table holds each day's Parquet rows",
                    fix=(
                        f"Materialize {asset.to_user_string()} for those days: it replaces each day atomically from "
                        "its Parquet (if rows_match_raw is red too, rebuild the Parquet first). Rows nobody loaded "
                        "mean something else writes to the table."
                    ),
                    extra={"table": spec.table_id},
                )
            if ONE_ROW_PER_ID in selected:
                findings = repeated_id_findings(days_with_repeated_ids(client, spec, natural_id, days))
                first = next(iter(findings), "YYYY-MM-DD")
                yield _day_result(
                    ONE_ROW_PER_ID,
                    findings,
                    checked=len(days) if days is not None else None,
                    passed=f"no day holds one {natural_id} on two rows, nor a row without one",
                    fix=(
                        f"Find them with SELECT {quoted(natural_id)}, COUNT(*) FROM {spec.fqn} WHERE `_export_date` = "
                        f"'{first}' GROUP BY 1 HAVING COUNT(*) > 1. Repeats within one export come from Hatch (the "
                        f"view {spec.table}_latest keeps one row per id); otherwise re-materialize those days."
                    ),
                )

    return table_checks


def _yesterday_landed(source: DataSource, settings: Settings) -> dg.AssetChecksDefinition:
    """Not dagster's build_time_partition_freshness_checks (freshness_checks/time_partition.py, 1.13), though it too
    judges per partition: it and its sensor warn SupersessionWarning at each load, it judges at the wall clock (not
    the schedule's tick, AS_OF_TAG), raises CheckError before the first partition, and names the day only in text."""
    asset = bigquery_key(source)
    fresh_by, zone = settings.fresh_by_time, settings.zone

    @dg.asset_check(
        asset=asset,
        name=YESTERDAY_LANDED,
        description=(
            f"Yesterday's partition is materialized by {settings.fresh_by} {settings.timezone} (HATCH_FRESH_BY in "
            "HATCH_TIMEZONE); before that time, the day before. Judged per partition: recent materializations of "
            "older days do not count."
        ),
    )
    def yesterday_landed(context: AssetCheckExecutionContext) -> dg.AssetCheckResult:
        as_of = _as_of(context.run.tags)
        due = due_day(as_of, fresh_by, zone)
        deadline = deadline_of(due, fresh_by, zone)
        metadata: dict[str, Any] = {
            "due_partition": due.isoformat(),
            "deadline": dg.MetadataValue.timestamp(deadline),
            "judged_at": dg.MetadataValue.timestamp(as_of),
        }
        if due < settings.first_partition_day:
            return dg.AssetCheckResult(
                passed=True, metadata=metadata, description=f"nothing is due before {settings.first_partition_day}"
            )
        instance = context.instance
        landed = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[due.isoformat()]), limit=1
        ).records
        newest = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset), limit=1).records
        if newest:
            metadata["newest_materialization"] = dg.MetadataValue.json(
                {
                    "partition": newest[0].partition_key,
                    "at": datetime.fromtimestamp(newest[0].timestamp, UTC).isoformat(),
                }
            )
        if landed:
            return dg.AssetCheckResult(passed=True, metadata=metadata, description=f"{due} landed")
        return dg.AssetCheckResult(
            passed=False,
            severity=_ERROR,
            metadata=metadata,
            description=(
                f"{due} had not landed in {asset.to_user_string()} by {deadline.isoformat(timespec='minutes')}. "
                "Look at the last hatch_daily_schedule run (a failure, or a stop at the vendor's daily cap, names "
                f"its cause), then materialize {due} of the hatch assets; this check turns green with it."
            ),
        )

    return yesterday_landed


def _as_of(tags: Mapping[str, str]) -> datetime:
    value = tags.get(AS_OF_TAG)
    return datetime.fromisoformat(value) if value else datetime.now(UTC)


def _day_result(
    name: str,
    findings: dict[str, Finding],
    *,
    checked: int | None,
    passed: str,
    fix: str,
    severity: dg.AssetCheckSeverity = _ERROR,
    extra: Mapping[str, Any] | None = None,
) -> dg.AssetCheckResult:
    """A check result over days: the failing ones in `failed_days`, the first few and the fix in the description."""
    of = f" of {checked}" if checked is not None else ""
    return dg.AssetCheckResult(
        check_name=name,
        passed=not findings,
        severity=severity,
        description=f"{len(findings)}{of} day(s) fail: {summary(findings)}. {fix}" if findings else passed,
        metadata={
            "failed_days": dg.MetadataValue.json(findings),
            "days_failed": len(findings),
            **({"days_checked": checked} if checked is not None else {}),
            **(extra or {}),
        },
    )

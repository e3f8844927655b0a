"""The per-source asset factory: hatch/raw/S → hatch/parquet/S → hatch/bigquery/S, daily-partitioned.

Every asset runs a whole partition range in one run (BackfillPolicy.single_run): a 30-day backfill is one run
whose raw step spends as few exports as the limits allow. The assets only wire the plain stages in stages/ to
Dagster's resources and report what happened as metadata.
"""

import functools
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Final, ParamSpec, TypeVar
from zoneinfo import ZoneInfo

import dagster as dg
from dagster import AssetExecutionContext
from pydantic import Field

from hatch_pipeline.contract import DataSource, ExportWindow, contiguous_windows
from hatch_pipeline.defs.automation import FOLLOWS_UPSTREAM
from hatch_pipeline.defs.catalog import COLUMN_SCHEMA, ROW_COUNT, TABLE_NAME, URI, column_schema, table_metadata
from hatch_pipeline.defs.constants import (
    ACCEPT_SHRINK_TAG,
    API_POOL,
    GROUP,
    OWNERS,
    REFETCH_TAG,
    bigquery_key,
    bigquery_pool,
    parquet_key,
    raw_key,
)
from hatch_pipeline.defs.resources import HatchBigQueryResource, HatchExportResource, HatchStorageResource
from hatch_pipeline.schemas import SCHEMAS
from hatch_pipeline.stages.bigquery import load_bigquery, table_spec
from hatch_pipeline.stages.common import lost_reason
from hatch_pipeline.stages.parquet import build_parquet
from hatch_pipeline.stages.raw import ExportsPaused, land_raw
from hatch_pipeline.warehouse import is_transient

BIGQUERY_RETRY_POLICY: Final = dg.RetryPolicy(
    max_retries=3, delay=20, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
"""How a BigQuery step retries an error that passes (`warehouse.is_transient`): after about 20, 60 and 140 s,
each ±20 s so that two steps that collided do not collide again. Waiting for a retry gives the pool slot back.
Other errors fail at once (`_retry_only_transient`). Google's client has already retried 5xx and rate limits for
up to 10 minutes before an error gets here; a transaction aborted by a concurrent update it never retries."""

_P = ParamSpec("_P")
_R = TypeVar("_R")

REFETCH_HELP: Final = (
    f"Stored days are never exported again. To refetch, launch the range with the run tag {REFETCH_TAG}=true "
    "(UI backfills take tags too) or with run config ops: {<raw asset op>: {config: {refetch: true}}}."
)


class RawConfig(dg.Config):
    refetch: bool = Field(
        default=False,
        description=(
            "Export the run's days again even when they are stored (the new ZIPs supersede the old ones, which "
            f"stay in the bucket). The run tag {REFETCH_TAG}=true does the same."
        ),
    )


def refetch_started(context: AssetExecutionContext) -> datetime:
    """When the run's refetch began: the start of the first of the runs that carry it on. A pause retries the step
    inside the run; a re-execution or a run retry (after a killed worker) is a new run whose parent did not
    succeed, so it carries on its parent's refetch, and every attempt counts what the others stored: the refetch
    exports each day once. Re-executing a run that succeeded starts a new refetch."""
    instance = context.instance
    first = context.run
    while first.parent_run_id is not None:
        parent = instance.get_run_by_id(first.parent_run_id)
        if parent is None or parent.status == dg.DagsterRunStatus.SUCCESS:
            break
        first = parent
    record = instance.get_run_record_by_id(first.run_id)
    if record is None:
        raise dg.DagsterInvariantViolationError(f"the run {first.run_id} has no record in its own instance")
    # A run that never started (queued, then re-executed) has only its creation time.
    began = record.start_time if record.start_time is not None else record.create_timestamp.timestamp()
    return datetime.fromtimestamp(began, UTC)


def _landed_before_pause(source: DataSource, paused: ExportsPaused) -> Iterator[dg.AssetMaterialization]:
    """The days of a paused range that are stored, as materializations of their partitions: the UI shows them."""
    for day in paused.stored:
        yield dg.AssetMaterialization(
            asset_key=raw_key(source), partition=day.isoformat(), metadata={"landed_before_pause": True}
        )


def _pause(
    context: AssetExecutionContext, paused: ExportsPaused, pauses: int, refetch: bool
) -> dg.RetryRequested | dg.Failure:
    """Ask Dagster to retry the step when the next slot opens; the retry exports only the days still missing.
    With no pause left, fail saying so."""
    if context.retry_number >= pauses:
        again = (
            "re-execute this run after that time (Re-execute from failure, or a run retry): the refetch goes on "
            "with the days still missing (a new launch with the refetch tag would export every day again)"
            if refetch
            else "launch the range again after that time; only the days still missing will be exported"
        )
        return dg.Failure(
            description=f"{paused} No pause is left for this run ({context.retry_number} of "
            f"max_quota_pauses={pauses} used): {again}.",
            metadata={"days_stored": len(paused.stored), "days_remaining": len(paused.remaining)},
        )
    wait = max((paused.opens_at - datetime.now(UTC)).total_seconds(), 0.0)
    context.log.warning(
        f"{paused} Pausing {wait:.0f} s, then carrying on (pause {context.retry_number + 1} of {pauses})."
    )
    return dg.RetryRequested(max_retries=pauses, seconds_to_wait=wait)


def _retry_only_transient(compute: Callable[_P, _R]) -> Callable[_P, _R]:
    """Let the step's retry policy retry only errors that pass by waiting; fail the rest at once, since running
    them again would fail the same way (a `Failure` with allow_retries=False is the one error a policy skips)."""

    @functools.wraps(compute)
    def compute_retrying_only_transient(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return compute(*args, **kwargs)
        except Exception as error:
            if is_transient(error):
                raise
            raise dg.Failure(description=f"{type(error).__name__}: {error}", allow_retries=False) from error

    return compute_retrying_only_transient


def tag_is_true(context: AssetExecutionContext, tag: str) -> bool:
    """Whether the run carries `tag`=true: tags are what the UI offers on every launch, backfills included."""
    return context.run.tags.get(tag, "").strip().lower() == "true"


def report_held(context: AssetExecutionContext, source: DataSource, held: Mapping[date, Mapping[str, Any]]) -> None:
    """Warn that days kept their landed rows because their newer export was far smaller (stages.SHRINK_LIMIT)."""
    if not held:
        return
    counts = "; ".join(
        f"{day}: {found['landed_rows']} landed, {found['refetched_rows']} in the newest export"
        for day, found in held.items()
    )
    context.log.warning(
        f"{source}: {len(held)} day(s) keep their landed rows, since their newest export holds far fewer ({counts}). "
        f"If the rows are really gone at Hatch, materialize again with the run tag {ACCEPT_SHRINK_TAG}=true."
    )


def run_days(context: AssetExecutionContext) -> ExportWindow:
    """The run's partition range as one window of days (a single partition is a one-day window)."""
    keys = sorted(context.partition_keys)
    return ExportWindow(date.fromisoformat(keys[0]), date.fromisoformat(keys[-1]))


def add_day_metadata(context: AssetExecutionContext, metadata_by_day: Mapping[date, Mapping[str, Any]]) -> None:
    """Give each partition of the run its own day's metadata. In a range run, Dagster copies a MaterializeResult's
    metadata to every partition; metadata added per partition key is merged into that partition's one
    materialization instead (overriding names the result uses too), so the UI shows each day's own counts."""
    for day, metadata in metadata_by_day.items():
        context.add_asset_metadata(dict(metadata), partition_key=day.isoformat())


def hatch_today(timezone: str) -> date:
    """Today in Hatch's day boundary (HATCH_TIMEZONE): it decides which days the vendor still serves."""
    return datetime.now(ZoneInfo(timezone)).date()


def report_lost(
    context: AssetExecutionContext, source: DataSource, lost: Sequence[date], today: date, doing: str
) -> dict[str, dg.MetadataValue]:
    """Say which days of the run cannot be landed (`stages.lost_days`): one warning for the run, the reason on
    each of those partitions, and the range's metadata entry. The rest of the range lands."""
    if not lost:
        return {}
    reason = lost_reason(today)
    windows = [str(window) for window in contiguous_windows(lost)]
    context.log.warning(f"{source}: {len(lost)} day(s) {doing} ({', '.join(windows)}): {reason}.")
    for day in lost:
        context.add_asset_metadata({"lost": reason}, partition_key=day.isoformat())
    return {"days_lost": dg.MetadataValue.json(windows)}


BACKFILL_POLICY_BETA: Final = r"Parameter `backfill_policy` of function `asset` is currently in beta"
"""Dagster 1.13's BetaWarning for `backfill_policy`, which it repeats for every asset at every code load."""


def single_run_asset(**asset_args: Any) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """`dg.asset` with `BackfillPolicy.single_run()`: a backfill or range is one run (fewest exports). The policy is
    beta in Dagster 1.13; we rely on it on purpose, so its warning, and only it, is silenced here, where it is
    raised, instead of reaching every code server's log and the demo's terminal."""

    def decorate(compute: Callable[..., Any]) -> dg.AssetsDefinition:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=BACKFILL_POLICY_BETA, category=dg.BetaWarning)
            asset: dg.AssetsDefinition = dg.asset(backfill_policy=dg.BackfillPolicy.single_run(), **asset_args)(compute)
        return asset

    return decorate


def build_source_assets(
    source: DataSource,
    partitions_def: dg.DailyPartitionsDefinition,
    *,
    date_column: str | None = None,
    bigquery_retry_policy: dg.RetryPolicy = BIGQUERY_RETRY_POLICY,
) -> list[dg.AssetsDefinition]:
    """The three assets of one data source. `date_column` picks which timestamp assigns rows to days;
    `bigquery_retry_policy` how the BigQuery step retries transient errors."""
    day_column = date_column or SCHEMAS[source].date_column
    # Hatch's day boundary (HATCH_TIMEZONE) is the partitions' zone: every stage agrees on what a day is.
    timezone = partitions_def.timezone or "UTC"

    @single_run_asset(
        key=raw_key(source),
        pool=API_POOL,
        kinds={"gcs"},
        description=(
            f"{source} exports from the Hatch Bulk Export API, stored unchanged as ZIPs in GCS. A run exports only "
            "the days of its range that have no stored export, in as few exports as the vendor's limits allow; "
            f"stored days are reused. Refetch with run config refetch: true or the run tag {REFETCH_TAG}=true. "
            "Days older than the vendor serves (180 days) are never requested: without a stored export they are "
            "reported as lost on their partitions (metadata `lost`) and the rest of the range lands."
        ),
        group_name=GROUP,
        partitions_def=partitions_def,
        owners=OWNERS,
    )
    def raw(
        context: AssetExecutionContext,
        config: RawConfig,
        hatch_api: HatchExportResource,
        hatch_storage: HatchStorageResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization]:
        days = run_days(context)
        today = hatch_today(timezone)
        refetch = config.refetch or tag_is_true(context, REFETCH_TAG)
        since = refetch_started(context) if refetch else None
        with hatch_api.client(timezone, log=context.log) as client:
            try:
                landing = land_raw(
                    source,
                    days,
                    client=client,
                    ledger=hatch_api.ledger(),
                    store=hatch_storage.store(),
                    max_payload_bytes=hatch_api.max_payload_bytes,
                    today=today,
                    refetch_since=since,
                    progress=context.log.info,
                )
            except ExportsPaused as paused:
                # Yielded, not logged: events logged by a step that then raises are dropped by Dagster.
                yield from _landed_before_pause(source, paused)
                raise _pause(context, paused, hatch_api.max_quota_pauses, refetch) from paused
        # Each day says which stored ZIP holds it and whether this run exported it; the range's figures follow.
        add_day_metadata(
            context,
            {
                day: {
                    URI: landed.zip_uri,
                    "export": "exported" if landed.exported else "reused",
                    "window": str(landed.window),
                }
                for landed in landing.windows
                for day in landed.window.dates()
                if days.start <= day <= days.end
            },
        )
        context.log.info(
            f"{source} {days}: {landing.exports} export(s), {len(landing.exported)} window(s) exported, "
            f"{len(landing.reused)} stored window(s) reused"
        )
        yield dg.MaterializeResult(
            metadata={
                "windows": dg.MetadataValue.json(
                    [
                        {
                            "window": str(landed.window),
                            "how": "exported" if landed.exported else "reused",
                            "zip": landed.zip_uri,
                            "uncompressed_bytes": landed.uncompressed_bytes,
                        }
                        for landed in landing.windows
                    ]
                ),
                "exports": landing.exports,
                "refused_413": landing.refusals,
                "days_exported": sum(landed.window.days for landed in landing.exported),
                "windows_reused": len(landing.reused),
                "refetch": refetch,
                # Exports stored since count as refetched: across pauses, re-executions and run retries.
                "refetch_since": since.isoformat(timespec="seconds") if since else None,
                "how_to_refetch": REFETCH_HELP,
                "seconds": round(landing.seconds, 1),
                **report_lost(context, source, landing.lost, today, "are not exported"),
            }
        )

    @single_run_asset(
        key=parquet_key(source),
        deps=[raw_key(source)],
        kinds={"gcs", "parquet", "polars"},
        description=(
            f"{source} as one typed Parquet file per day in GCS, parsed from the stored ZIPs (never the API), with "
            f"lineage columns _export_date, _source_file and _loaded_at. Rows go to the day of {day_column} in "
            "HATCH_TIMEZONE. A day whose newer export holds far fewer rows than were landed keeps its rows (check "
            f"refetch_not_shrunk) unless the run has the tag {ACCEPT_SHRINK_TAG}=true."
        ),
        group_name=GROUP,
        partitions_def=partitions_def,
        automation_condition=FOLLOWS_UPSTREAM,
        owners=OWNERS,
        metadata=table_metadata(source),
    )
    def parquet(context: AssetExecutionContext, hatch_storage: HatchStorageResource) -> dg.MaterializeResult:
        days = run_days(context)
        store = hatch_storage.store()
        today = hatch_today(timezone)
        build = build_parquet(
            source,
            days,
            store=store,
            timezone=timezone,
            loaded_at=datetime.now(UTC),
            today=today,
            date_column=day_column,
            accept_shrink=tag_is_true(context, ACCEPT_SHRINK_TAG),
        )
        report_held(context, source, build.held)
        add_day_metadata(
            context,
            {
                day: {
                    ROW_COUNT: record.rows,
                    "rows_dated_outside_window": record.clamped_rows,
                    "rows_undated": record.undated_rows,
                    URI: store.uri(record.file) if record.file else None,
                }
                for day, record in build.days.items()
            },
        )
        return dg.MaterializeResult(
            metadata={
                "range": str(days),
                "range_rows": sum(build.rows_by_day.values()),
                "raw_rows_read": build.raw_rows,
                "raw_zips_read": dg.MetadataValue.json(list(build.raw_files)),
                # The columns this build found: the documented ones plus any the vendor added since.
                **({COLUMN_SCHEMA: column_schema(source, list(build.columns))} if build.columns else {}),
                # Vendor columns whose JSON values were numbers, booleans or objects: stored as text regardless.
                "vendor_columns_kept_as_text": dg.MetadataValue.json(build.text_columns),
                "manifest": build.manifest,
                "days_held_from_shrink": dg.MetadataValue.json({str(day): found for day, found in build.held.items()}),
                **report_lost(context, source, build.lost, today, "have no Parquet"),
                "orphan_files_deleted": len(build.orphans_deleted),
            }
        )

    @single_run_asset(
        key=bigquery_key(source),
        deps=[parquet_key(source)],
        pool=bigquery_pool(source),
        retry_policy=bigquery_retry_policy,
        automation_condition=FOLLOWS_UPSTREAM,
        kinds={"bigquery"},
        description=(
            f"The BigQuery table {source}, partitioned on _export_date and clustered on "
            f"{SCHEMAS[source].natural_id}; a run replaces exactly its days in one transaction. The view "
            f"{source}_latest keeps the newest row per {SCHEMAS[source].natural_id}."
        ),
        group_name=GROUP,
        partitions_def=partitions_def,
        owners=OWNERS,
        metadata=table_metadata(source),
    )
    @_retry_only_transient
    def bigquery(
        context: AssetExecutionContext, hatch_bigquery: HatchBigQueryResource, hatch_storage: HatchStorageResource
    ) -> dg.MaterializeResult:
        spec = table_spec(source, hatch_bigquery.project or "", hatch_bigquery.dataset)
        days = run_days(context)
        with hatch_bigquery.get_client() as client:
            load = load_bigquery(
                source,
                days,
                store=hatch_storage.store(),
                client=client,
                spec=spec,
                location=hatch_bigquery.location or "US",
                run_id=context.run.run_id,
                log=context.log.warning,
            )
        add_day_metadata(context, {day: {ROW_COUNT: rows} for day, rows in load.rows_by_day.items()})
        return dg.MaterializeResult(
            metadata={
                TABLE_NAME: load.table,
                "range": str(days),
                "range_rows": sum(load.rows_by_day.values()),
                "added_columns": dg.MetadataValue.json(list(load.added_columns)),
                "bigquery_jobs": load.jobs,
                **report_lost(context, source, load.lost, hatch_today(timezone), "are left as the table holds them"),
            }
        )

    return [raw, parquet, bigquery]

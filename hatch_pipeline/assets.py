"""The per-source asset factory: hatch/raw/S → hatch/parquet/S → hatch/bigquery/S, daily-partitioned.

Every asset runs a whole partition range in one run (BackfillPolicy.single_run): a 30-day backfill is one run
whose raw step spends as few exports as the limits allow. The assets only wire the plain stages in stages.py to
Dagster's resources and report what happened as metadata.
"""

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import dagster as dg
from dagster import AssetExecutionContext
from pydantic import Field

from hatch_pipeline.checks import ROWS_MATCH_PARQUET, reconcile_rows
from hatch_pipeline.export_api.windows import DataSource, ExportWindow
from hatch_pipeline.resources import HatchBigQueryResource, HatchExportResource, HatchStorageResource
from hatch_pipeline.schemas import SCHEMAS
from hatch_pipeline.stages import ExportsPaused, build_parquet, land_raw, load_bigquery, table_spec

API_POOL: Final = "hatch_export_api"
"""Steps that call the vendor API share this pool; its limit of one (dagster.yaml) keeps them in single file."""

GROUP: Final = "hatch"
OWNERS: Final = ["team:data-engineering"]
FRESH_BY_HOUR: Final = 9
"""Hour (HATCH_TIMEZONE) by which each table should hold yesterday; the daily schedule runs at 06:00 by default."""


def raw_key(source: DataSource) -> dg.AssetKey:
    return dg.AssetKey(["hatch", "raw", source])


def parquet_key(source: DataSource) -> dg.AssetKey:
    return dg.AssetKey(["hatch", "parquet", source])


def bigquery_key(source: DataSource) -> dg.AssetKey:
    return dg.AssetKey(["hatch", "bigquery", source])


def source_keys(sources: Sequence[DataSource]) -> list[dg.AssetKey]:
    """Every asset key of `sources`, stage by stage: what a run of those sources' whole pipeline selects."""
    return [make(source) for make in (raw_key, parquet_key, bigquery_key) for source in sources]


REFETCH_TAG: Final = "hatch/refetch"
"""A run tag (`true`) that makes the raw assets export the run's days again, e.g. on a UI backfill."""
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


def _landed_before_pause(source: DataSource, paused: ExportsPaused) -> Iterator[dg.AssetMaterialization]:
    """The days of a paused range that are stored, as materializations of their partitions: the UI shows them."""
    for day in paused.stored:
        yield dg.AssetMaterialization(
            asset_key=raw_key(source), partition=day.isoformat(), metadata={"landed_before_pause": True}
        )


def _pause(context: AssetExecutionContext, paused: ExportsPaused, pauses: int) -> dg.RetryRequested | dg.Failure:
    """Ask Dagster to retry the step when the next slot opens; the retry exports only the days still missing.
    With no pause left, fail saying so."""
    if context.retry_number >= pauses:
        return dg.Failure(
            description=f"{paused} No pause is left for this run ({context.retry_number} of "
            f"max_quota_pauses={pauses} used): launch the range again after that time; only the days still "
            "missing will be exported.",
            metadata={"days_stored": len(paused.stored), "days_remaining": len(paused.remaining)},
        )
    wait = max((paused.opens_at - datetime.now(UTC)).total_seconds(), 0.0)
    context.log.warning(
        f"{paused} Pausing {wait:.0f} s, then carrying on (pause {context.retry_number + 1} of {pauses})."
    )
    return dg.RetryRequested(max_retries=pauses, seconds_to_wait=wait)


def run_days(context: AssetExecutionContext) -> ExportWindow:
    """The run's partition range as one window of days (a single partition is a one-day window)."""
    keys = sorted(context.partition_keys)
    return ExportWindow(date.fromisoformat(keys[0]), date.fromisoformat(keys[-1]))


def daily_metadata(rows_by_day: dict[date, int]) -> dg.MetadataValue:
    return dg.MetadataValue.json({day.isoformat(): rows for day, rows in rows_by_day.items()})


def build_source_assets(
    source: DataSource, partitions_def: dg.DailyPartitionsDefinition, *, date_column: str | None = None
) -> list[dg.AssetsDefinition]:
    """The three assets of one data source. `date_column` picks which timestamp assigns rows to days."""
    day_column = date_column or SCHEMAS[source].date_column

    @dg.asset(
        key=raw_key(source),
        pool=API_POOL,
        kinds={"gcs"},
        description=(
            f"{source} exports from the Hatch Bulk Export API, stored unchanged as ZIPs in GCS. A run exports only "
            "the days of its range that have no stored export, in as few exports as the vendor's limits allow; "
            f"stored days are reused. Refetch with run config refetch: true or the run tag {REFETCH_TAG}=true."
        ),
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        owners=OWNERS,
    )
    def raw(
        context: AssetExecutionContext,
        config: RawConfig,
        hatch_api: HatchExportResource,
        hatch_storage: HatchStorageResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization]:
        days = run_days(context)
        refetch = config.refetch or context.run.tags.get(REFETCH_TAG, "").strip().lower() == "true"
        with hatch_api.client(log=context.log) as client:
            try:
                landing = land_raw(
                    source,
                    days,
                    client=client,
                    ledger=hatch_api.ledger(),
                    store=hatch_storage.store(),
                    max_payload_bytes=hatch_api.max_payload_bytes,
                    today=datetime.now(ZoneInfo(hatch_api.timezone)).date(),
                    refetch=refetch,
                    progress=context.log.info,
                )
            except ExportsPaused as paused:
                # Yielded, not logged: events logged by a step that then raises are dropped by Dagster.
                yield from _landed_before_pause(source, paused)
                raise _pause(context, paused, hatch_api.max_quota_pauses) from paused
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
                "how_to_refetch": REFETCH_HELP,
                "seconds": round(landing.seconds, 1),
            }
        )

    @dg.asset(
        key=parquet_key(source),
        deps=[raw_key(source)],
        kinds={"gcs", "parquet", "polars"},
        description=(
            f"{source} as one typed Parquet file per day in GCS, parsed from the stored ZIPs (never the API), with "
            f"lineage columns _export_date, _source_file and _loaded_at. Rows go to the day of {day_column} in "
            "HATCH_TIMEZONE."
        ),
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        owners=OWNERS,
    )
    def parquet(
        context: AssetExecutionContext, hatch_api: HatchExportResource, hatch_storage: HatchStorageResource
    ) -> dg.MaterializeResult:
        build = build_parquet(
            source,
            run_days(context),
            store=hatch_storage.store(),
            timezone=hatch_api.timezone,
            loaded_at=datetime.now(UTC),
            date_column=day_column,
        )
        return dg.MaterializeResult(
            metadata={
                "rows": sum(build.rows_by_day.values()),
                "rows_by_day": daily_metadata(build.rows_by_day),
                "raw_rows_read": build.raw_rows,
                "raw_zips_read": dg.MetadataValue.json(list(build.raw_files)),
                "columns": dg.MetadataValue.json(list(build.columns)),
                # Vendor columns whose JSON values were numbers, booleans or objects: stored as text regardless.
                "vendor_columns_kept_as_text": dg.MetadataValue.json(build.text_columns),
                "manifest": build.manifest,
                "orphan_files_deleted": len(build.orphans_deleted),
            }
        )

    @dg.asset(
        key=bigquery_key(source),
        deps=[parquet_key(source)],
        kinds={"bigquery"},
        description=(
            f"The BigQuery table {source}, partitioned on _export_date and clustered on "
            f"{SCHEMAS[source].natural_id}; a run replaces exactly its days in one transaction. The view "
            f"{source}_latest keeps the newest row per {SCHEMAS[source].natural_id}."
        ),
        check_specs=[dg.AssetCheckSpec(ROWS_MATCH_PARQUET, asset=bigquery_key(source))],
        # The daily run starts at 06:00; by 09:00 yesterday's rows should be in the table, else the UI says so.
        freshness_policy=dg.FreshnessPolicy.cron(
            deadline_cron=f"0 {FRESH_BY_HOUR} * * *",
            lower_bound_delta=timedelta(hours=24),
            timezone=partitions_def.timezone or "UTC",
        ),
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        owners=OWNERS,
    )
    def bigquery(
        context: AssetExecutionContext, hatch_bigquery: HatchBigQueryResource, hatch_storage: HatchStorageResource
    ) -> dg.MaterializeResult:
        spec = table_spec(source, hatch_bigquery.project or "", hatch_bigquery.dataset)
        with hatch_bigquery.get_client() as client:
            load = load_bigquery(
                source,
                run_days(context),
                store=hatch_storage.store(),
                client=client,
                spec=spec,
                location=hatch_bigquery.location or "US",
                run_id=context.run.run_id,
            )
        return dg.MaterializeResult(
            metadata={
                "table": load.table,
                "rows": sum(load.rows_by_day.values()),
                "rows_by_day": daily_metadata(load.rows_by_day),
                "added_columns": dg.MetadataValue.json(list(load.added_columns)),
                "bigquery_jobs": load.jobs,
            },
            check_results=[reconcile_rows(load.expected_rows_by_day, load.rows_by_day)],
        )

    return [raw, parquet, bigquery]

"""The per-source asset factory: hatch/raw/S → hatch/parquet/S → hatch/bigquery/S, daily-partitioned.

Every asset runs a whole partition range in one run (BackfillPolicy.single_run): a 30-day backfill is one run
whose raw step spends as few exports as the limits allow. The assets only wire the plain stages in stages.py to
Dagster's resources and report what happened as metadata.
"""

from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import dagster as dg
from dagster import AssetExecutionContext

from hatch_pipeline.checks import ROWS_MATCH_PARQUET, reconcile_rows
from hatch_pipeline.export_api.windows import DataSource, ExportWindow
from hatch_pipeline.resources import HatchBigQueryResource, HatchExportResource, HatchStorageResource
from hatch_pipeline.schemas import SCHEMAS
from hatch_pipeline.stages import build_parquet, land_raw, load_bigquery, table_spec

API_POOL: Final = "hatch_export_api"
"""Steps that call the vendor API share this pool; its limit of one (dagster.yaml) keeps them in single file."""

GROUP: Final = "hatch"
OWNERS: Final = ["team:data-engineering"]
FRESH_BY_HOUR: Final = 9
"""Hour (HATCH_TIMEZONE) by which each table should hold yesterday; the daily schedule runs at 06:00."""


def raw_key(source: DataSource) -> dg.AssetKey:
    return dg.AssetKey(["hatch", "raw", source])


def parquet_key(source: DataSource) -> dg.AssetKey:
    return dg.AssetKey(["hatch", "parquet", source])


def bigquery_key(source: DataSource) -> dg.AssetKey:
    return dg.AssetKey(["hatch", "bigquery", source])


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
            f"{source} exports from the Hatch Bulk Export API, stored unchanged as ZIPs in GCS. A run exports its "
            "whole partition range in as few exports as the vendor's limits allow."
        ),
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        owners=OWNERS,
    )
    def raw(
        context: AssetExecutionContext, hatch_api: HatchExportResource, hatch_storage: HatchStorageResource
    ) -> dg.MaterializeResult:
        days = run_days(context)
        ledger = hatch_api.ledger()
        with hatch_api.client() as client:
            landing = land_raw(
                source,
                days,
                client=client,
                store=hatch_storage.store(),
                observed_bytes_per_day=ledger.observed_bytes_per_day(source),
                max_payload_bytes=hatch_api.max_payload_bytes,
                today=datetime.now(ZoneInfo(hatch_api.timezone)).date(),
            )
        context.log.info(f"{source} {days}: {landing.exports} export(s), {len(landing.stored)} ZIP(s) stored")
        return dg.MaterializeResult(
            metadata={
                "windows": dg.MetadataValue.json([str(window) for window in landing.windows]),
                "exports": landing.exports,
                "splits_after_413": landing.splits,
                "stored_zips": dg.MetadataValue.json(list(landing.stored)),
                "compressed_bytes": landing.compressed_bytes,
                "uncompressed_bytes": landing.uncompressed_bytes,
                "seconds_waiting_for_slots": round(landing.waited_seconds, 1),
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

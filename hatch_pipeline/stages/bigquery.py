"""The BigQuery stage: the Parquet a build published, loaded into the day-partitioned table in one transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final

from google.cloud import bigquery

from hatch_pipeline import warehouse
from hatch_pipeline.contract import DataSource, ExportWindow
from hatch_pipeline.schemas import COLUMN_DESCRIPTIONS, LINEAGE_COLUMNS, SCHEMAS, column_dtypes
from hatch_pipeline.stages.common import MissingUpstream, NothingToLand, quiet
from hatch_pipeline.storage.keys import parquet_manifests_prefix, parquet_prefix
from hatch_pipeline.storage.manifests import DayRecord, published_records
from hatch_pipeline.storage.store import ObjectStore


def published_days(store: ObjectStore, source: DataSource, days: ExportWindow) -> dict[date, DayRecord]:
    """What the Parquet stage published for each day; fails naming the days nothing was published for."""
    records = published_records(store, source, days.dates())
    missing = [day for day in days.dates() if day not in records]
    if missing:
        upstream = f"hatch/parquet/{source}"
        raise MissingUpstream(
            f"{upstream} has published nothing for {missing[0]}"
            + (f" and {len(missing) - 1} more day(s)" if len(missing) > 1 else "")
            + f" (no manifest under {store.uri(parquet_manifests_prefix(source))} covers it); materialize {upstream} "
            "for those days first"
        )
    return records


@dataclass(frozen=True)
class BigQueryLoad:
    table: str
    rows_by_day: dict[date, int]
    """What the table holds for those days as the load committed them (the checks count again on their own)."""
    added_columns: tuple[str, ...]
    jobs: int
    lost: tuple[date, ...]
    """Days the Parquet stage published as lost: left as the table holds them (see `common.lost_days`)."""


def table_spec(source: DataSource, project: str, dataset: str) -> warehouse.TableSpec:
    """The source's table, documented: column descriptions from schemas.py, and where the rows come from."""
    natural_id = SCHEMAS[source].natural_id
    docs = warehouse.TableDocs(
        description=(
            f"Hatch {source} as the Bulk Export API delivers it, landed by hatch_pipeline: one partition per day "
            f"(_export_date, in HATCH_TIMEZONE), every version of a record; {source}_latest keeps the newest."
        ),
        columns=COLUMN_DESCRIPTIONS,
        labels={"source": source, "pipeline": "hatch_pipeline"},
        view_description=(
            f"The newest row of each {natural_id} in {source} (by {SCHEMAS[source].date_column}, then export day)."
        ),
    )
    return warehouse.TableSpec(project=project, dataset=dataset, table=source, cluster_column=natural_id, docs=docs)


LOAD_ATTEMPTS: Final = 3
"""How often a load reads the newest Parquet manifest and loads its files while newer builds of the same days keep
retiring them under it; then it raises `ParquetReplaced`, which the step's retry policy retries after a wait."""


def load_bigquery(
    source: DataSource,
    days: ExportWindow,
    *,
    store: ObjectStore,
    client: bigquery.Client,
    spec: warehouse.TableSpec,
    location: str,
    run_id: str,
    log: Callable[[str], None] = quiet,
) -> BigQueryLoad:
    """Replace exactly the range's days in the day-partitioned table with the stored Parquet, in one transaction.
    Days the Parquet stage published as lost are not touched.

    A build of these days that publishes while the load runs deletes the files the load read (or the manifest it
    was reading): the load then reads the newest manifest and loads again, up to `LOAD_ATTEMPTS` times. A load
    that fails on the files the newest manifest still names fails as before: loading them again cannot help.
    """
    for attempt in range(1, LOAD_ATTEMPTS + 1):
        try:
            published = published_days(store, source, days)
            return _load_published(
                source, days, published, client=client, spec=spec, location=location, run_id=run_id, store=store
            )
        except warehouse.LoadFailed as error:
            if published_days(store, source, days) == published:
                raise
            replaced: Exception = error
        except warehouse.ParquetReplaced as error:
            replaced = error
        if attempt < LOAD_ATTEMPTS:
            log(
                f"hatch/parquet/{source} {days}: a newer build replaced the files being loaded; loading the newest "
                f"(attempt {attempt + 1} of {LOAD_ATTEMPTS}). {replaced}"
            )
    raise warehouse.ParquetReplaced(
        f"newer builds of hatch/parquet/{source} replaced the Parquet files of {days} during each of {LOAD_ATTEMPTS} "
        "loads; the table was not changed. The step retries by itself; if builds of these days keep running beside "
        "the load, let them finish and run it again"
    ) from replaced


def _load_published(
    source: DataSource,
    days: ExportWindow,
    published: Mapping[date, DayRecord],
    *,
    store: ObjectStore,
    client: bigquery.Client,
    spec: warehouse.TableSpec,
    location: str,
    run_id: str,
) -> BigQueryLoad:
    """`load_bigquery` of the records one read of the Parquet manifests returned."""
    lost = tuple(day for day, record in published.items() if record.lost)
    records = {day: record for day, record in published.items() if day not in lost}
    if not records:
        raise NothingToLand(
            f"none of the days {days} can be loaded: hatch/parquet/{source} published them all as lost (nothing "
            "stored, older than the vendor serves)"
        )
    # Files of one column set load together (the emulator maps Parquet columns by position, BigQuery by name).
    files_by_columns: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for record in records.values():
        if record.file is not None:
            files_by_columns[record.columns].append(store.uri(record.file))
    groups = [
        warehouse.ParquetGroup(
            uris=tuple(uris), columns=_bigquery_columns(source, names), hive_prefix=store.uri(parquet_prefix(source))
        )
        for names, uris in files_by_columns.items()
    ]
    # Documented and lineage columns always exist, even for a range without rows; vendor-added ones when seen.
    table_columns = _bigquery_columns(source, [*SCHEMAS[source].columns, *LINEAGE_COLUMNS])
    for group in groups:
        table_columns |= group.columns
    warehouse.ensure_dataset(client, spec.project, spec.dataset, location)
    added = warehouse.ensure_table(client, spec, table_columns)
    result = warehouse.replace_days(client, spec, groups=groups, days=list(records), run_id=run_id)
    warehouse.ensure_latest_view(client, spec, id_column=SCHEMAS[source].natural_id)
    return BigQueryLoad(
        table=f"{spec.project}.{spec.dataset}.{spec.table}",
        rows_by_day={day: result.rows_by_day.get(day, 0) for day in records},
        added_columns=tuple(added),
        jobs=result.jobs,
        lost=lost,
    )


def _bigquery_columns(source: DataSource, names: Sequence[str]) -> dict[str, str]:
    return warehouse.bigquery_columns(column_dtypes(source, names))

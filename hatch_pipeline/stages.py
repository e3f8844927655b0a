"""The three stages of a data source as plain functions: export to raw ZIPs, ZIPs to Parquet, Parquet to BigQuery.

Assets call these and turn their results into metadata; everything here runs without Dagster. Each stage reads
only what the stage before it stored (invariant 3): Parquet and BigQuery never call the API.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from google.cloud import bigquery

from hatch_pipeline import warehouse
from hatch_pipeline.export_api.client import ExportedFile, ExportOutcome, HatchExportClient
from hatch_pipeline.export_api.errors import InvalidExportRequest
from hatch_pipeline.export_api.planner import Sent, SizeEvidence, export_days
from hatch_pipeline.export_api.windows import DataSource, ExportWindow, range_violations
from hatch_pipeline.parsing import parse_export
from hatch_pipeline.schemas import LINEAGE_COLUMNS, SCHEMAS, column_dtypes
from hatch_pipeline.storage import (
    ObjectStore,
    parquet_day_key,
    parquet_file_key,
    parquet_prefix,
    raw_day_key,
    raw_zip_key,
)


class MissingUpstream(RuntimeError):
    """A stage was asked for days the stage before it has not stored yet."""


# --- raw ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawLanding:
    windows: tuple[ExportWindow, ...]
    """The windows actually exported, as planned again after every answer."""
    exports: int
    """Requests that spent an export (413s included, retries of one window not)."""
    splits: int
    """Of `exports`, how many the vendor refused with a 413 (the days were then planned again)."""
    stored: tuple[str, ...]
    """gs:// URIs of the ZIPs that hold the range (204 windows store none)."""
    compressed_bytes: int
    uncompressed_bytes: int
    waited_seconds: float


def check_exportable(days: ExportWindow, today: date) -> None:
    """Fail before any export when the vendor would refuse part of the range."""
    problems = range_violations(days, today)
    if problems:
        raise InvalidExportRequest(
            f"days {days} cannot be exported: " + "; ".join(problems) + ". Materialize only days the API still "
            "serves (the last 180 days up to yesterday); older days cannot be fetched again."
        )


def land_raw(
    source: DataSource,
    days: ExportWindow,
    *,
    client: HatchExportClient,
    store: ObjectStore,
    observed_bytes_per_day: Mapping[date, float],
    max_payload_bytes: int,
    today: date,
) -> RawLanding:
    """Export the range in as few windows as the limits allow, learning sizes from every answer, and store each ZIP,
    unchanged, as soon as it arrives, then point each of its days at it; a failure half-way keeps what was stored."""
    check_exportable(days, today)
    outcomes: list[tuple[ExportOutcome, str | None]] = []
    with tempfile.TemporaryDirectory(prefix="hatch-raw-") as workdir:

        def send(window: ExportWindow) -> Sent:
            outcome = client.export(source, window, Path(workdir))
            uri = _store_raw(store, outcome)
            outcomes.append((outcome, uri))
            if not isinstance(outcome, ExportedFile):  # a 204: the window holds no rows
                return Sent(frozenset(window.dates()), window)
            outcome.path.unlink()
            return Sent(frozenset(window.dates()), window, outcome.uncompressed_bytes)

        run = export_days(
            list(days.dates()),
            send,
            evidence=SizeEvidence(bytes_per_day=observed_bytes_per_day),
            max_payload_bytes=max_payload_bytes,
            source=source,
        )
    exported = [outcome for outcome, _ in outcomes if isinstance(outcome, ExportedFile)]
    return RawLanding(
        windows=run.windows,
        exports=run.requests,
        splits=run.refusals,
        stored=tuple(uri for _, uri in outcomes if uri is not None),
        compressed_bytes=sum(outcome.compressed_bytes for outcome in exported),
        uncompressed_bytes=sum(outcome.uncompressed_bytes for outcome in exported),
        waited_seconds=sum(outcome.waited_seconds for outcome, _ in outcomes),
    )


def _store_raw(store: ObjectStore, outcome: ExportOutcome) -> str | None:
    """Store the ZIP (content-addressed: never replaced by other bytes), then record it for each of its days."""
    pointer: dict[str, Any] = {
        "source": outcome.source,
        "window": [outcome.window.start.isoformat(), outcome.window.end.isoformat()],
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "zip": None,
    }
    uri = None
    if isinstance(outcome, ExportedFile):
        key = raw_zip_key(outcome.source, outcome.path.stem, outcome.sha256)
        store.put_file_once(key, outcome.path, "application/zip")
        uri = store.uri(key)
        pointer |= {
            "zip": key,
            "sha256": outcome.sha256,
            "output_format": outcome.output_format,
            "uncompressed_bytes": outcome.uncompressed_bytes,
        }
    for day in outcome.window.dates():
        store.put_json(raw_day_key(outcome.source, day), {**pointer, "day": day.isoformat()})
    return uri


# --- parquet ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParquetBuild:
    rows_by_day: dict[date, int]
    columns: tuple[str, ...]
    """Union of the columns of the range's files, in the order the parser writes them."""
    raw_files: tuple[str, ...]
    """gs:// URIs of the ZIPs read."""
    raw_rows: int
    """Records in those ZIPs (for days outside the range too, when a ZIP spans more than the range)."""


def build_parquet(
    source: DataSource,
    days: ExportWindow,
    *,
    store: ObjectStore,
    timezone: str,
    loaded_at: datetime,
    date_column: str | None = None,
) -> ParquetBuild:
    """Parse the stored ZIPs that hold the range into one Parquet file per day (none for a day without rows)."""
    pointers = {day: _require(store, raw_day_key(source, day), f"hatch/raw/{source}", day) for day in days.dates()}
    by_zip: dict[tuple[str | None, date, date], list[date]] = defaultdict(list)
    for day, pointer in pointers.items():
        start, end = (date.fromisoformat(value) for value in pointer["window"])
        by_zip[(pointer["zip"], start, end)].append(day)

    rows_by_day: dict[date, int] = {}
    columns: dict[str, None] = {}
    raw_rows = 0
    raw_files: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hatch-parquet-") as workdir:
        for index, ((key, start, end), wanted) in enumerate(sorted(by_zip.items(), key=lambda item: item[1][0])):
            if key is None:  # the vendor answered 204: these days have no rows
                for day in wanted:
                    rows_by_day[day] = _publish_day(store, source, day, None, 0, ())
                continue
            # Keep the stored name, so a parse error names the object a user can find in the bucket.
            (Path(workdir) / str(index)).mkdir()
            zip_path = store.download(key, Path(workdir) / str(index) / key.rsplit("/", 1)[-1])
            parsed = parse_export(
                zip_path,
                source=source,
                window=ExportWindow(start, end),
                out_dir=Path(workdir) / f"parsed-{index}",
                timezone=timezone,
                source_file=store.uri(key),
                loaded_at=loaded_at,
                date_column=date_column,
            )
            raw_files.append(store.uri(key))
            raw_rows += parsed.rows
            columns |= dict.fromkeys(parsed.columns)
            for parsed_day in parsed.days:
                if parsed_day.day in wanted:
                    rows_by_day[parsed_day.day] = _publish_day(
                        store, source, parsed_day.day, parsed_day.path, parsed_day.rows, parsed.columns
                    )
            zip_path.unlink()
    return ParquetBuild(
        rows_by_day=dict(sorted(rows_by_day.items())),
        columns=tuple(columns),
        raw_files=tuple(raw_files),
        raw_rows=raw_rows,
    )


def _publish_day(
    store: ObjectStore, source: DataSource, day: date, path: Path | None, rows: int, columns: tuple[str, ...]
) -> int:
    """Put (or remove) the day's file first, then its record: the record never points at a file not yet there."""
    if path is None:
        store.delete(parquet_file_key(source, day))
    else:
        store.put_file(parquet_file_key(source, day), path, "application/vnd.apache.parquet")
    store.put_json(
        parquet_day_key(source, day),
        {"day": day.isoformat(), "rows": rows, "columns": list(columns) if rows else []},
    )
    return rows


def _require(store: ObjectStore, key: str, upstream: str, day: date) -> dict[str, Any]:
    document = store.get_json(key)
    if document is None:
        raise MissingUpstream(
            f"{upstream} has nothing stored for {day} ({store.uri(key)} is missing); materialize {upstream} "
            "for that day first"
        )
    return document


# --- bigquery -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BigQueryLoad:
    table: str
    expected_rows_by_day: dict[date, int]
    """What the Parquet stage recorded: the reconciliation target."""
    rows_by_day: dict[date, int]
    """What the table holds for those days after the load."""
    added_columns: tuple[str, ...]
    jobs: int


def table_spec(source: DataSource, project: str, dataset: str) -> warehouse.TableSpec:
    return warehouse.TableSpec(
        project=project, dataset=dataset, table=source, cluster_column=SCHEMAS[source].natural_id
    )


def load_bigquery(
    source: DataSource,
    days: ExportWindow,
    *,
    store: ObjectStore,
    client: bigquery.Client,
    spec: warehouse.TableSpec,
    location: str,
    run_id: str,
) -> BigQueryLoad:
    """Replace exactly the range's days in the day-partitioned table with the stored Parquet, in one transaction."""
    records = {
        day: _require(store, parquet_day_key(source, day), f"hatch/parquet/{source}", day) for day in days.dates()
    }
    # Files of one column set load together (the emulator maps Parquet columns by position, BigQuery by name).
    files_by_columns: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for day, record in records.items():
        if record["rows"]:
            files_by_columns[tuple(record["columns"])].append(store.uri(parquet_file_key(source, day)))
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
        expected_rows_by_day={day: int(record["rows"]) for day, record in records.items()},
        rows_by_day={day: result.rows_by_day.get(day, 0) for day in records},
        added_columns=tuple(added),
        jobs=result.jobs,
    )


def _bigquery_columns(source: DataSource, names: Sequence[str]) -> dict[str, str]:
    return warehouse.bigquery_columns(column_dtypes(source, names))

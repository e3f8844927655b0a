"""The three stages of a data source as plain functions: export to raw ZIPs, ZIPs to Parquet, Parquet to BigQuery.

Assets call these and turn their results into metadata; everything here runs without Dagster. Each stage reads
only what the stage before it stored (invariant 3): Parquet and BigQuery never call the API.
"""

from __future__ import annotations

import secrets
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from google.cloud import bigquery

from hatch_pipeline import warehouse
from hatch_pipeline.export_api.client import ExportedFile, ExportOutcome, HatchExportClient
from hatch_pipeline.export_api.errors import InvalidExportRequest
from hatch_pipeline.export_api.planner import export_windows, plan_windows
from hatch_pipeline.export_api.windows import DataSource, ExportWindow, range_violations
from hatch_pipeline.parsing import parse_export
from hatch_pipeline.schemas import LINEAGE_COLUMNS, SCHEMAS, column_dtypes
from hatch_pipeline.storage import (
    ObjectStore,
    parquet_file_key,
    parquet_manifest_key,
    parquet_manifest_prefix,
    parquet_prefix,
    raw_day_key,
    raw_zip_key,
)

_PARALLEL_CALLS: Final = 8
"""Object-store calls in flight at once when a stage uploads, reads or deletes many objects."""
_PARQUET_TYPE: Final = "application/vnd.apache.parquet"
_T = TypeVar("_T")


class MissingUpstream(RuntimeError):
    """A stage was asked for days the stage before it has not stored yet."""


# --- raw ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawLanding:
    windows: tuple[ExportWindow, ...]
    """The windows actually exported, after any 413 splits."""
    exports: int
    """Requests that spent an export (413s included, retries of one window not)."""
    splits: int
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
    """Export the range in as few windows as the limits allow and store each ZIP, unchanged, as soon as it arrives,
    then point each of its days at it; a failure half-way keeps what was already stored."""
    check_exportable(days, today)
    windows = plan_windows(
        days.start, days.end, bytes_per_day=observed_bytes_per_day, max_payload_bytes=max_payload_bytes
    )
    with tempfile.TemporaryDirectory(prefix="hatch-raw-") as workdir:

        def export(window: ExportWindow) -> tuple[ExportOutcome, str | None]:
            outcome = client.export(source, window, Path(workdir))
            uri = _store_raw(store, outcome)
            if isinstance(outcome, ExportedFile):
                outcome.path.unlink()
            return outcome, uri

        run = export_windows(windows, export, source=source)
    outcomes = [outcome for _, (outcome, _) in run.results]
    exported = [outcome for outcome in outcomes if isinstance(outcome, ExportedFile)]
    return RawLanding(
        windows=tuple(window for window, _ in run.results),
        exports=run.requests,
        splits=run.splits,
        stored=tuple(uri for _, (_, uri) in run.results if uri is not None),
        compressed_bytes=sum(outcome.compressed_bytes for outcome in exported),
        uncompressed_bytes=sum(outcome.uncompressed_bytes for outcome in exported),
        waited_seconds=sum(outcome.waited_seconds for outcome in outcomes),
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
    text_columns: dict[str, str]
    """Vendor-added columns that held non-text JSON values (name -> the type polars saw), stored as text."""
    manifest: str
    """gs:// URI of the manifest that published the range."""


def build_parquet(
    source: DataSource,
    days: ExportWindow,
    *,
    store: ObjectStore,
    timezone: str,
    loaded_at: datetime,
    date_column: str | None = None,
) -> ParquetBuild:
    """Parse the stored ZIPs that hold the range into one Parquet file per day (none for a day without rows).

    The files are uploaded in parallel under names unique to this build, then one manifest names them all: that
    write is what makes the range's new days visible, so a build that fails or is killed half-way publishes
    nothing. Files the manifest supersedes are deleted afterwards.
    """
    pointers = {day: _require(store, raw_day_key(source, day), f"hatch/raw/{source}", day) for day in days.dates()}
    by_zip: dict[tuple[str | None, date, date], list[date]] = defaultdict(list)
    for day, pointer in pointers.items():
        start, end = (date.fromisoformat(value) for value in pointer["window"])
        by_zip[(pointer["zip"], start, end)].append(day)

    token = f"{loaded_at.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}"
    published: dict[date, dict[str, Any]] = {}
    columns: dict[str, None] = {}
    text_columns: dict[str, str] = {}
    raw_rows = 0
    raw_files: list[str] = []
    uploads: list[Future[None]] = []
    # The pool is left (every upload finished) before the folder holding the files is removed.
    with tempfile.TemporaryDirectory(prefix="hatch-parquet-") as workdir, ThreadPoolExecutor(_PARALLEL_CALLS) as pool:
        for index, ((key, start, end), wanted) in enumerate(sorted(by_zip.items(), key=lambda item: item[1][0])):
            if key is None:  # the vendor answered 204: these days have no rows
                published |= {day: _day_record(None, 0, ()) for day in wanted}
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
            text_columns |= parsed.text_columns
            for parsed_day in parsed.days:
                if parsed_day.day not in wanted:
                    continue
                file_key = None
                if parsed_day.path is not None:
                    file_key = parquet_file_key(source, parsed_day.day, token)
                    uploads.append(pool.submit(store.put_file, file_key, parsed_day.path, _PARQUET_TYPE))
                published[parsed_day.day] = _day_record(file_key, parsed_day.rows, parsed.columns)
            zip_path.unlink()
        for upload in uploads:
            upload.result()  # the first failed upload fails the build before anything is published
    manifest = _publish_manifest(store, source, days, token, published)
    return ParquetBuild(
        rows_by_day={day: record["rows"] for day, record in sorted(published.items())},
        columns=tuple(columns),
        raw_files=tuple(raw_files),
        raw_rows=raw_rows,
        text_columns=text_columns,
        manifest=store.uri(manifest),
    )


def _day_record(file_key: str | None, rows: int, columns: Sequence[str]) -> dict[str, Any]:
    return {"file": file_key, "rows": rows, "columns": list(columns) if rows else []}


@dataclass(frozen=True, order=True)
class _Manifest:
    """A Parquet manifest as its key names it: sorting orders manifests oldest first."""

    stamp: str
    start: date
    end: date
    key: str

    @classmethod
    def from_key(cls, key: str) -> _Manifest:
        stamp, start, end = key.rsplit("/", 1)[-1].removesuffix(".json").split("_")
        return cls(stamp, date.fromisoformat(start), date.fromisoformat(end), key)

    def covers(self, day: date) -> bool:
        return self.start <= day <= self.end


def _manifests(store: ObjectStore, source: DataSource) -> list[_Manifest]:
    return sorted(_Manifest.from_key(key) for key in store.list(parquet_manifest_prefix(source)))


def _newest_manifests(manifests: Sequence[_Manifest], days: Iterable[date]) -> dict[date, _Manifest]:
    """For each of `days` that any manifest covers, the newest one that does."""
    wanted = tuple(days)
    newest: dict[date, _Manifest] = {}
    for manifest in manifests:  # oldest first, so newer ones overwrite
        newest |= {day: manifest for day in wanted if manifest.covers(day)}
    return newest


def _publish_manifest(
    store: ObjectStore, source: DataSource, days: ExportWindow, token: str, records: Mapping[date, dict[str, Any]]
) -> str:
    """Write the manifest that makes `records` the range's days, then retire what it supersedes: the older
    manifests' files for these days, and the manifests none of whose days they still decide."""
    older = _manifests(store, source)
    key = parquet_manifest_key(source, token, days.start, days.end)
    store.put_json(key, {"source": source, "days": {day.isoformat(): records[day] for day in days.dates()}})
    ours = _Manifest.from_key(key)
    overlapping = [
        manifest for manifest in older if manifest < ours and manifest.start <= days.end and days.start <= manifest.end
    ]
    newest = _newest_manifests([*older, ours], {day for manifest in overlapping for day in _dates(manifest)})
    documents = dict(zip(overlapping, _in_parallel(lambda m: store.get_json(m.key), overlapping), strict=True))
    doomed = [
        file_key
        for manifest, document in documents.items()
        for day, record in (document or {}).get("days", {}).items()
        if days.start <= date.fromisoformat(day) <= days.end and (file_key := record.get("file"))
    ]
    doomed += [m.key for m in overlapping if all(newest[day] != m for day in _dates(m))]
    list(_in_parallel(store.delete, doomed))
    return key


def _dates(manifest: _Manifest) -> Iterator[date]:
    return ExportWindow(manifest.start, manifest.end).dates()


def _in_parallel(call: Callable[[Any], _T], items: Sequence[Any]) -> Iterator[_T]:
    """`call` over `items` with a few object-store calls in flight, results in order."""
    if len(items) <= 1:
        return map(call, items)
    with ThreadPoolExecutor(_PARALLEL_CALLS) as pool:
        return iter(list(pool.map(call, items)))


def _require(store: ObjectStore, key: str, upstream: str, day: date) -> dict[str, Any]:
    document = store.get_json(key)
    if document is None:
        raise MissingUpstream(
            f"{upstream} has nothing stored for {day} ({store.uri(key)} is missing); materialize {upstream} "
            "for that day first"
        )
    return document


def published_days(store: ObjectStore, source: DataSource, days: ExportWindow) -> dict[date, dict[str, Any]]:
    """What the Parquet stage published for each day: its file key (None without rows), rows and columns.

    One listing finds the newest manifest of each day; only those are read (one for a range built in one run).
    """
    newest = _newest_manifests(_manifests(store, source), days.dates())
    missing = [day for day in days.dates() if day not in newest]
    if missing:
        upstream = f"hatch/parquet/{source}"
        raise MissingUpstream(
            f"{upstream} has published nothing for {missing[0]}"
            + (f" and {len(missing) - 1} more day(s)" if len(missing) > 1 else "")
            + f" (no manifest under {store.uri(parquet_manifest_prefix(source))} covers it); materialize {upstream} "
            "for those days first"
        )
    wanted = sorted(set(newest.values()))
    documents = dict(zip(wanted, _in_parallel(lambda m: store.get_json(m.key), wanted), strict=True))
    if any(document is None for document in documents.values()):
        raise MissingUpstream(f"a manifest of hatch/parquet/{source} was replaced while it was read; run again")
    return {day: (documents[newest[day]] or {})["days"][day.isoformat()] for day in days.dates()}


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
    records = published_days(store, source, days)
    # Files of one column set load together (the emulator maps Parquet columns by position, BigQuery by name).
    files_by_columns: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for record in records.values():
        if record["file"] is not None:
            files_by_columns[tuple(record["columns"])].append(store.uri(record["file"]))
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

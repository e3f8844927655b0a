"""The three stages of a data source as plain functions: export to raw ZIPs, ZIPs to Parquet, Parquet to BigQuery.

Assets call these and turn their results into metadata; everything here runs without Dagster. Each stage reads
only what the stage before it stored (invariant 3): Parquet and BigQuery never call the API.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from google.cloud import bigquery

from hatch_pipeline import warehouse
from hatch_pipeline.export_api.client import ExportedFile, ExportOutcome, HatchExportClient, NothingToSend
from hatch_pipeline.export_api.errors import HatchExportError, InvalidExportRequest, SlotUnavailable
from hatch_pipeline.export_api.ledger import Claim, Decide, RateLedger
from hatch_pipeline.export_api.planner import Sent, SizeEvidence, export_days, plan_windows
from hatch_pipeline.export_api.windows import DataSource, ExportWindow, contiguous_windows, range_violations
from hatch_pipeline.parsing import parse_export
from hatch_pipeline.schemas import LINEAGE_COLUMNS, SCHEMAS, column_dtypes
from hatch_pipeline.storage import (
    ObjectStore,
    RawManifest,
    newest_manifests,
    parquet_day_key,
    parquet_file_key,
    parquet_prefix,
    parse_raw_manifest_key,
    raw_manifest_key,
    raw_manifests_prefix,
    raw_zip_key,
)


class MissingUpstream(RuntimeError):
    """A stage was asked for days the stage before it has not stored yet."""


# --- raw ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LandedWindow:
    """One stored export that holds days of the run."""

    window: ExportWindow
    exported: bool
    """True when this run exported it; False when an export stored earlier (by any run or machine) was reused."""
    zip_uri: str | None
    """None when the vendor answered 204 (no rows)."""
    uncompressed_bytes: int


@dataclass(frozen=True)
class RawLanding:
    windows: tuple[LandedWindow, ...]
    """Every stored export that holds the run's days, in date order."""
    exports: int
    """Requests that spent an export (413s included, retries of one window not)."""
    refusals: int
    """Of which the vendor answered 413 (the window was planned again smaller)."""
    seconds: float
    """Wall-clock time of the stage, waits for slots and for other runs' exports included."""

    @property
    def exported(self) -> tuple[LandedWindow, ...]:
        return tuple(window for window in self.windows if window.exported)

    @property
    def reused(self) -> tuple[LandedWindow, ...]:
        return tuple(window for window in self.windows if not window.exported)


class ExportsPaused(HatchExportError):
    """The vendor's limits allow no further export soon: what was exported is stored, the rest waits."""

    def __init__(self, source: str, stored: Sequence[date], remaining: Sequence[date], cause: SlotUnavailable):
        windows = ", ".join(str(window) for window in contiguous_windows(remaining))
        super().__init__(
            f"{source}: stopped before the vendor's limits would refuse a request. {len(stored)} day(s) of the "
            f"range are stored, {len(remaining)} remain ({windows}); nothing stored will be exported again. {cause}"
        )
        self.stored = tuple(stored)
        self.remaining = tuple(remaining)
        self.opens_at = cause.opens_at


def check_exportable(days: ExportWindow, today: date) -> None:
    """Fail before any export when the vendor would refuse part of the range."""
    problems = range_violations(days, today)
    if problems:
        raise InvalidExportRequest(
            f"days {days} cannot be exported: " + "; ".join(problems) + ". Materialize only days the API still "
            "serves (the last 180 days up to yesterday); older days cannot be fetched again."
        )


def _quiet(message: str) -> None:
    """The default progress sink: say nothing."""


def land_raw(
    source: DataSource,
    days: ExportWindow,
    *,
    client: HatchExportClient,
    ledger: RateLedger,
    store: ObjectStore,
    max_payload_bytes: int,
    today: date,
    refetch: bool = False,
    progress: Callable[[str], None] = _quiet,
    poll_seconds: float = 5.0,
) -> RawLanding:
    """Make sure every day of the range has a stored export, exporting only the days that have none.

    Days stored by any earlier run, retry or machine are reused (unless `refetch`: then only what was stored after
    this call began counts). What to export is decided again when each request's slot has come, against what is
    stored and what other senders have claimed at that moment, so overlapping runs export each day once: a day
    another sender is exporting is waited for (polling every `poll_seconds`), not exported again. The plan learns
    from every answer. Each ZIP is stored, unchanged, as soon as it arrives, then its manifest; a failure keeps
    what was stored. When the limits allow no further export soon, raises ExportsPaused naming what remains.
    """
    started = datetime.now(UTC)
    wanted = list(days.dates())
    earlier = {} if refetch else newest_manifests(_raw_manifests(store, source), wanted)
    todo = [day for day in wanted if day not in earlier]
    for window in contiguous_windows(todo):
        check_exportable(window, today)
    landed = [_reused(store, manifest) for manifest in sorted(set(earlier.values()))]
    covered: set[date] = set(earlier)

    def stored_now() -> dict[date, RawManifest]:
        manifests = _raw_manifests(store, source)
        return newest_manifests([m for m in manifests if not refetch or m.exported_at >= started], todo)

    def decide_for(window: ExportWindow) -> Decide:
        def decide(claims: Sequence[Claim]) -> ExportWindow | None:
            stored = stored_now()
            claimed = {day for claim in claims if claim.source == source for day in claim.window.dates()}
            free = contiguous_windows(day for day in window.dates() if day not in stored and day not in claimed)
            return free[0] if free else None

        return decide

    with tempfile.TemporaryDirectory(prefix="hatch-raw-") as workdir:

        def send(window: ExportWindow) -> Sent:
            while True:
                left = [day for day in todo if day not in covered]
                progress(_before_export(source, window, ledger, left, max_payload_bytes))
                outcome = client.export(source, window, Path(workdir), decide=decide_for(window))
                if isinstance(outcome, NothingToSend):
                    stored = stored_now()
                    found = frozenset(day for day in window.dates() if day in stored)
                    if found:
                        landed.extend(_reused(store, manifest) for manifest in sorted({stored[d] for d in found}))
                        covered.update(found)
                        progress(f"{source} {window}: already stored by another run, nothing sent")
                        return Sent(covered=found, exported=None)
                    progress(f"{source} {window}: another run is exporting these days; waiting for its ZIP")
                    time.sleep(poll_seconds)
                    continue
                stored_window = _store_raw(store, outcome)
                ledger.release(outcome.claim_owner)
                landed.append(stored_window)
                covered.update(outcome.window.dates())
                progress(_after_export(source, stored_window, sum(day not in covered for day in todo)))
                return Sent(
                    covered=frozenset(outcome.window.dates()),
                    exported=outcome.window,
                    uncompressed_bytes=stored_window.uncompressed_bytes,
                )

        try:
            run = export_days(
                todo,
                send,
                evidence=SizeEvidence(bytes_per_day=ledger.observed_bytes_per_day(source)),
                max_payload_bytes=max_payload_bytes,
                source=source,
            )
        except SlotUnavailable as stop:
            raise ExportsPaused(source, sorted(covered), [day for day in wanted if day not in covered], stop) from stop
    return RawLanding(
        windows=tuple(sorted(landed, key=lambda window: window.window)),
        exports=run.requests,
        refusals=run.refusals,
        seconds=(datetime.now(UTC) - started).total_seconds(),
    )


def _before_export(
    source: str, window: ExportWindow, ledger: RateLedger, left: list[date], max_payload_bytes: int
) -> str:
    """Where a long raw step stands, as the next request is about to be sent (read-only: reserves nothing)."""
    usage = ledger.usage()
    evidence = SizeEvidence(bytes_per_day=ledger.observed_bytes_per_day(source))
    planned = plan_windows(left, evidence, max_payload_bytes=max_payload_bytes)
    finish = ledger.next_slots(len(planned))[-1]
    return (
        f"{source} {window}: exporting {window.days} day(s) ({len(left)} of the run still to store, about "
        f"{len(planned)} export(s)); {usage.used_in_24h} export(s) used in the last 24 h, {usage.left_in_24h} left; "
        f"next slot {usage.next_slot.isoformat(timespec='seconds')}, last export about "
        f"{finish.isoformat(timespec='seconds')}"
    )


def _after_export(source: str, landed: LandedWindow, days_left: int) -> str:
    what = f"stored {landed.zip_uri} ({landed.uncompressed_bytes:,} bytes)" if landed.zip_uri else "no rows (204)"
    return f"{source} {landed.window}: exported, {what}; {days_left} day(s) of the run still to store"


def _raw_manifests(store: ObjectStore, source: DataSource) -> list[RawManifest]:
    return [m for key in store.list_keys(raw_manifests_prefix(source)) if (m := parse_raw_manifest_key(key))]


def _reused(store: ObjectStore, manifest: RawManifest) -> LandedWindow:
    document = _manifest_document(store, manifest)
    zip_key = document.get("zip")
    return LandedWindow(
        window=manifest.window,
        exported=False,
        zip_uri=store.uri(zip_key) if zip_key else None,
        uncompressed_bytes=int(document.get("uncompressed_bytes", 0)),
    )


def _manifest_document(store: ObjectStore, manifest: RawManifest) -> dict[str, Any]:
    document = store.get_json(manifest.key)
    if document is None:
        raise MissingUpstream(f"the raw manifest {store.uri(manifest.key)} vanished while it was being read")
    return document


def _store_raw(store: ObjectStore, outcome: ExportOutcome) -> LandedWindow:
    """Store the ZIP (content-addressed: never replaced by other bytes), then its manifest, which makes its days
    count as stored: a crash in between costs the export again, never a day pointing at a missing file."""
    exported_at = datetime.now(UTC)
    manifest: dict[str, Any] = {
        "source": outcome.source,
        "window": [outcome.window.start.isoformat(), outcome.window.end.isoformat()],
        "exported_at": exported_at.isoformat(),
        "zip": None,
    }
    uri = None
    uncompressed = 0
    if isinstance(outcome, ExportedFile):
        key = raw_zip_key(outcome.source, outcome.path.stem, outcome.sha256)
        store.put_file_once(key, outcome.path, "application/zip")
        outcome.path.unlink()
        uri = store.uri(key)
        uncompressed = outcome.uncompressed_bytes
        manifest |= {
            "zip": key,
            "sha256": outcome.sha256,
            "output_format": outcome.output_format,
            "compressed_bytes": outcome.compressed_bytes,
            "uncompressed_bytes": uncompressed,
        }
    store.put_json(raw_manifest_key(outcome.source, outcome.window, exported_at), manifest)
    return LandedWindow(window=outcome.window, exported=True, zip_uri=uri, uncompressed_bytes=uncompressed)


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
    wanted = list(days.dates())
    newest = newest_manifests(_raw_manifests(store, source), wanted)
    missing = [day for day in wanted if day not in newest]
    if missing:
        raise MissingUpstream(
            f"hatch/raw/{source} has no stored export for {', '.join(str(w) for w in contiguous_windows(missing))} "
            f"(no manifest under {store.uri(raw_manifests_prefix(source))}); materialize hatch/raw/{source} for "
            "those days first"
        )
    documents = {manifest: _manifest_document(store, manifest) for manifest in set(newest.values())}
    by_zip: dict[tuple[str | None, date, date], list[date]] = defaultdict(list)
    for day, manifest in newest.items():
        by_zip[(documents[manifest]["zip"], manifest.window.start, manifest.window.end)].append(day)

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

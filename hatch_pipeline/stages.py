"""The three stages of a data source as plain functions: export to raw ZIPs, ZIPs to Parquet, Parquet to BigQuery.

Assets call these and turn their results into metadata; everything here runs without Dagster. Each stage reads
only what the stage before it stored (invariant 3): Parquet and BigQuery never call the API.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

from google.cloud import bigquery

from hatch_pipeline import warehouse
from hatch_pipeline.contract import (
    MAX_LOOKBACK_DAYS,
    DataSource,
    ExportWindow,
    contiguous_windows,
    earliest_allowed_day,
    range_violations,
)
from hatch_pipeline.export_api.client import ExportedFile, ExportOutcome, HatchExportClient, NothingToSend
from hatch_pipeline.export_api.errors import HatchExportError, InvalidExportRequest, SlotUnavailable
from hatch_pipeline.export_api.ledger import Claim, Decide, RateLedger
from hatch_pipeline.export_api.planner import Sent, SizeEvidence, export_days, plan_windows
from hatch_pipeline.parsing.export import ParsedDay, parse_export
from hatch_pipeline.schemas import LINEAGE_COLUMNS, SCHEMAS, column_dtypes
from hatch_pipeline.storage import (
    ObjectStore,
    RawManifest,
    newest_manifests,
    parquet_day_prefix,
    parquet_file_key,
    parquet_manifest_key,
    parquet_manifest_prefix,
    parquet_prefix,
    parse_raw_manifest_key,
    raw_manifest_key,
    raw_manifests_prefix,
    raw_zip_key,
)

_PARALLEL_CALLS: Final = 8
"""Object-store calls in flight at once when a stage uploads, reads or deletes many objects."""
_PARQUET_TYPE: Final = "application/vnd.apache.parquet"
ORPHAN_GRACE: Final = timedelta(hours=6)
"""How old an unnamed Parquet file must be before a build deletes it as an orphan: far longer than a build takes,
so the files of a build still running beside this one, not yet named by its manifest, are left alone."""
SHRINK_LIMIT: Final = 0.5
"""A day's newer export is "far smaller" when it holds fewer than this share of the rows landed for the day (none,
as a 204, always is): the Parquet build then keeps the landed rows unless told to accept the shrink."""
_T = TypeVar("_T")
_DAY: Final = timedelta(days=1)


class MissingUpstream(RuntimeError):
    """A stage was asked for days the stage before it has not stored yet."""


class NothingToLand(HatchExportError):
    """Every day of a range has nothing stored and is older than the vendor serves: no stage can produce a thing."""


def lost_reason(today: date) -> str:
    """Why a day with nothing stored, older than the vendor serves, cannot be landed, and what to do about it."""
    earliest = earliest_allowed_day(today)
    return (
        f"nothing is stored for it and the vendor serves only the last {MAX_LOOKBACK_DAYS} days (today, {today}, "
        f"from {earliest}), so it cannot be exported again and stays empty in every stage. Leave days before "
        f"{earliest} that were never landed out of the ranges you launch"
    )


def lost_days(days: ExportWindow, stored: Iterable[date], today: date) -> list[date]:
    """The range's days that nothing stored holds and the vendor no longer serves. Stages skip and report them, so
    the rest of the range lands; when that is every day, NothingToLand says so instead."""
    held = set(stored)
    lost = [day for day in days.dates() if day < earliest_allowed_day(today) and day not in held]
    if len(lost) == days.days:
        raise NothingToLand(f"none of the days {days} can be landed: {lost_reason(today)}.")
    return lost


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
    lost: tuple[date, ...]
    """Days of the run with nothing stored that the vendor no longer serves: not requested (see `lost_days`)."""
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
    refetch_since: datetime | None = None,
    progress: Callable[[str], None] = _quiet,
    poll_seconds: float = 5.0,
) -> RawLanding:
    """Make sure every day of the range has a stored export, exporting only the days that have none.

    Days stored by any earlier run, retry or machine are reused. A refetch passes when it began (`refetch_since`):
    then only what was stored since counts, so a refetch that pauses, is retried or is re-executed exports each day
    once across all its attempts. What to export is decided again when each request's slot has come, against what
    is stored and what other senders have claimed at that moment, so overlapping runs export each day once: a day
    another sender is exporting is waited for (polling every `poll_seconds`), not exported again. The plan learns
    from every answer. Each ZIP is stored, unchanged, as soon as it arrives, then its manifest; a failure keeps
    what was stored. When the limits allow no further export soon, raises ExportsPaused naming what remains.
    Days the vendor no longer serves are never requested: stored ones are reused (also on a refetch, which cannot
    replace them), the others are returned as `lost`.
    """
    started = datetime.now(UTC)
    wanted = list(days.dates())
    stored = newest_manifests(_raw_manifests(store, source), wanted)
    lost = lost_days(days, stored, today)
    exportable = earliest_allowed_day(today)

    def fresh(manifest: RawManifest) -> bool:
        return refetch_since is None or manifest.exported_at >= refetch_since

    earlier = {day: manifest for day, manifest in stored.items() if fresh(manifest) or day < exportable}
    todo = [day for day in wanted if day not in earlier and day >= exportable]
    for window in contiguous_windows(todo):
        check_exportable(window, today)
    landed = [_reused(store, manifest) for manifest in sorted(set(earlier.values()))]
    covered: set[date] = set(earlier)

    def stored_now() -> dict[date, RawManifest]:
        manifests = _raw_manifests(store, source)
        return newest_manifests([m for m in manifests if fresh(m)], todo)

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
            raise ExportsPaused(source, sorted(covered), [day for day in todo if day not in covered], stop) from stop
    return RawLanding(
        windows=tuple(sorted(landed, key=lambda window: window.window)),
        lost=tuple(lost),
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
    return [m for key in store.list(raw_manifests_prefix(source)) if (m := parse_raw_manifest_key(key))]


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
    days: dict[date, dict[str, Any]]
    """Each day's record in the manifest (see `_day_record`), in date order."""
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
    lost: tuple[date, ...]
    """Days with no stored export that the vendor no longer serves: published as lost, without rows or file."""
    orphans_deleted: tuple[str, ...]
    """Keys of files under the range's days that no manifest named (left by a build killed before its manifest)."""

    @property
    def rows_by_day(self) -> dict[date, int]:
        """Rows per day written, lost days left out (they have no file)."""
        return {day: int(record["rows"]) for day, record in self.days.items() if not record.get("lost")}

    @property
    def held(self) -> dict[date, dict[str, Any]]:
        """Days whose newer export was far smaller than what was landed, so the landed rows were kept: per day the
        rows kept (`landed_rows`), and the declined export's rows and ZIP (`refetched_rows`, `refetched_zip`)."""
        held = {day: record for day, record in self.days.items() if "held" in record}
        return {day: {"landed_rows": record["rows"], **record["held"]} for day, record in held.items()}


def build_parquet(
    source: DataSource,
    days: ExportWindow,
    *,
    store: ObjectStore,
    timezone: str,
    loaded_at: datetime,
    today: date,
    date_column: str | None = None,
    orphan_grace: timedelta = ORPHAN_GRACE,
    accept_shrink: bool = False,
) -> ParquetBuild:
    """Parse the stored ZIPs that hold the range into one Parquet file per day (none for a day without rows).

    The files are uploaded in parallel under names unique to this build, then one manifest names them all: that
    write is what makes the range's new days visible, so a build that fails or is killed half-way publishes
    nothing. Files the manifest supersedes are deleted afterwards, and so are files under the range's days that no
    manifest names once they are older than `orphan_grace`. Days that can never be landed (`lost_days`, as of
    `today`) are published as lost, so the BigQuery stage leaves them alone.

    A day whose newest export holds far fewer rows than the build that published it read (`SHRINK_LIMIT`: a refetch
    answered 204 while the vendor refreshed, say) keeps its published file and rows, noting the declined export
    under `held`, so nothing downstream empties a landed day; `accept_shrink` publishes the smaller export instead.
    """
    wanted = list(days.dates())
    newest = newest_manifests(_raw_manifests(store, source), wanted)
    lost = lost_days(days, newest, today)
    missing = [day for day in wanted if day not in newest and day not in lost]
    if missing:
        raise MissingUpstream(
            f"hatch/raw/{source} has no stored export for {', '.join(str(w) for w in contiguous_windows(missing))} "
            f"(no manifest under {store.uri(raw_manifests_prefix(source))}); materialize hatch/raw/{source} for "
            "those days first"
        )
    landed = {} if accept_shrink else published_records(store, source, wanted)
    documents = {manifest: _manifest_document(store, manifest) for manifest in set(newest.values())}
    by_zip: dict[tuple[str | None, date, date], list[date]] = defaultdict(list)
    for day, manifest in newest.items():
        by_zip[(documents[manifest]["zip"], manifest.window.start, manifest.window.end)].append(day)

    token = f"{loaded_at.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}"
    published: dict[date, dict[str, Any]] = {
        day: {**_day_record(None, None, ParsedDay(day, None, 0), ()), "lost": True} for day in lost
    }
    columns: dict[str, None] = {}
    text_columns: dict[str, str] = {}
    raw_rows = 0
    raw_files: list[str] = []
    uploads: list[Future[None]] = []
    # The pool is left (every upload finished) before the folder holding the files is removed.
    with tempfile.TemporaryDirectory(prefix="hatch-parquet-") as workdir, ThreadPoolExecutor(_PARALLEL_CALLS) as pool:
        for index, ((key, start, end), wanted) in enumerate(sorted(by_zip.items(), key=lambda item: item[1][0])):
            if key is None:  # the vendor answered 204: these days have no rows
                for day in wanted:
                    published[day] = _kept_if_shrunk(landed.get(day), None, 0) or _day_record(
                        None, None, ParsedDay(day, None, 0), ()
                    )
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
                kept = _kept_if_shrunk(landed.get(parsed_day.day), key, parsed_day.rows)
                if kept is not None:
                    published[parsed_day.day] = kept
                    continue
                file_key = None
                if parsed_day.path is not None:
                    file_key = parquet_file_key(source, parsed_day.day, token)
                    uploads.append(pool.submit(store.put_file, file_key, parsed_day.path, _PARQUET_TYPE))
                published[parsed_day.day] = _day_record(
                    file_key, key, parsed_day, parsed.columns, parsed.vendor_columns
                )
            zip_path.unlink()
        for upload in uploads:
            upload.result()  # the first failed upload fails the build before anything is published
    manifest_key = _publish_manifest(store, source, days, token, published)
    orphans = _delete_orphans(store, source, days, {record["file"] for record in published.values()}, orphan_grace)
    return ParquetBuild(
        days=dict(sorted(published.items())),
        columns=tuple(columns),
        raw_files=tuple(raw_files),
        raw_rows=raw_rows,
        text_columns=text_columns,
        manifest=store.uri(manifest_key),
        lost=tuple(lost),
        orphans_deleted=orphans,
    )


def _kept_if_shrunk(landed: Mapping[str, Any] | None, raw_zip: str | None, rows: int) -> dict[str, Any] | None:
    """The landed record of a day, noting the declined export under `held`, when the `rows` the export (`raw_zip`,
    None for a 204) holds for the day are far fewer (see SHRINK_LIMIT); None when the export may replace it."""
    if landed is None or landed.get("lost") or rows >= SHRINK_LIMIT * int(landed["rows"]):
        return None
    return {**landed, "held": {"refetched_rows": rows, "refetched_zip": raw_zip}}


def _delete_orphans(
    store: ObjectStore, source: DataSource, days: ExportWindow, ours: Collection[str | None], grace: timedelta
) -> tuple[str, ...]:
    """Delete the files under the range's day folders that no manifest names and that are older than `grace`.

    One listing finds the day folders' files; only when some are old and not this build's are the manifests of
    those days read, so that a file another manifest still names (a build published since) is kept.
    """
    cutoff = datetime.now(UTC) - grace
    listed = store.list_created(
        parquet_prefix(source), parquet_day_prefix(source, days.start), parquet_day_prefix(source, days.end + _DAY)
    )
    old = [key for key, created in listed if created < cutoff and key not in ours]
    if not old:
        return ()
    covering = [manifest for manifest in _manifests(store, source) if manifest.overlaps(days)]
    named = {
        record.get("file")
        for document in _in_parallel(lambda m: store.get_json(m.key), covering)
        for record in (document or {}).get("days", {}).values()
    }
    orphans = tuple(key for key in old if key not in named)
    list(_in_parallel(store.delete, orphans))
    return orphans


def _day_record(
    file_key: str | None,
    raw_zip: str | None,
    parsed: ParsedDay,
    columns: Sequence[str],
    vendor_columns: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A day's entry in the Parquet manifest: its file and columns, and what the checks reconcile it with (the ZIP
    read, the rows read out of it, the columns it carried, the rows moved into the window)."""
    return {
        "file": file_key,
        "rows": parsed.rows,
        "columns": list(columns) if parsed.rows else [],
        "raw_zip": raw_zip,
        "vendor_columns": None if vendor_columns is None else list(vendor_columns),
        "clamped_rows": parsed.clamped_rows,
        "undated_rows": parsed.undated_rows,
    }


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

    def overlaps(self, days: ExportWindow) -> bool:
        return self.start <= days.end and days.start <= self.end


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
    overlapping = [manifest for manifest in older if manifest < ours and manifest.overlaps(days)]
    newest = _newest_manifests([*older, ours], {day for manifest in overlapping for day in _dates(manifest)})
    documents = dict(zip(overlapping, _in_parallel(lambda m: store.get_json(m.key), overlapping), strict=True))
    kept = {record.get("file") for record in records.values()}  # a day held from a shrink keeps its older file
    doomed = [
        file_key
        for manifest, document in documents.items()
        for day, record in (document or {}).get("days", {}).items()
        if days.start <= date.fromisoformat(day) <= days.end
        and (file_key := record.get("file"))
        and file_key not in kept
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


def newest_raw_zips(
    store: ObjectStore, source: DataSource, days: Iterable[date] | None = None
) -> dict[date, str | None]:
    """The key of each day's newest stored ZIP (None where the vendor answered 204), for the days of `days` (every
    stored day when None) that have a stored export."""
    manifests = _raw_manifests(store, source)
    wanted = sorted({day for m in manifests for day in m.window.dates()} if days is None else set(days))
    newest = newest_manifests(manifests, wanted)
    readable = sorted(set(newest.values()))
    documents = dict(zip(readable, _in_parallel(lambda m: _manifest_document(store, m), readable), strict=True))
    return {day: documents[manifest].get("zip") for day, manifest in newest.items()}


def published_days(store: ObjectStore, source: DataSource, days: ExportWindow) -> dict[date, dict[str, Any]]:
    """What the Parquet stage published for each day: its file key (None without rows), rows and columns (see
    `_day_record`); fails naming the days nothing was published for."""
    records = published_records(store, source, days.dates())
    missing = [day for day in days.dates() if day not in records]
    if missing:
        upstream = f"hatch/parquet/{source}"
        raise MissingUpstream(
            f"{upstream} has published nothing for {missing[0]}"
            + (f" and {len(missing) - 1} more day(s)" if len(missing) > 1 else "")
            + f" (no manifest under {store.uri(parquet_manifest_prefix(source))} covers it); materialize {upstream} "
            "for those days first"
        )
    return records


def published_records(
    store: ObjectStore, source: DataSource, days: Iterable[date] | None = None
) -> dict[date, dict[str, Any]]:
    """The newest manifest's record of each of `days` (every day any manifest covers when None) that has one.

    One listing finds the newest manifest of each day; only those are read (one for a range built in one run).
    """
    manifests = _manifests(store, source)
    wanted = sorted({day for m in manifests for day in _dates(m)} if days is None else set(days))
    newest = _newest_manifests(manifests, wanted)
    readable = sorted(set(newest.values()))
    documents = dict(zip(readable, _in_parallel(lambda m: store.get_json(m.key), readable), strict=True))
    if any(document is None for document in documents.values()):
        raise warehouse.ParquetReplaced(
            f"a manifest of hatch/parquet/{source} was replaced while it was read; run again"
        )
    return {day: (documents[newest[day]] or {})["days"][day.isoformat()] for day in wanted if day in newest}


# --- bigquery -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BigQueryLoad:
    table: str
    rows_by_day: dict[date, int]
    """What the table holds for those days as the load committed them (the checks count again on their own)."""
    added_columns: tuple[str, ...]
    jobs: int
    lost: tuple[date, ...]
    """Days the Parquet stage published as lost: left as the table holds them (see `lost_days`)."""


def table_spec(source: DataSource, project: str, dataset: str) -> warehouse.TableSpec:
    return warehouse.TableSpec(
        project=project, dataset=dataset, table=source, cluster_column=SCHEMAS[source].natural_id
    )


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
    log: Callable[[str], None] = _quiet,
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
    published: Mapping[date, dict[str, Any]],
    *,
    store: ObjectStore,
    client: bigquery.Client,
    spec: warehouse.TableSpec,
    location: str,
    run_id: str,
) -> BigQueryLoad:
    """`load_bigquery` of the records one read of the Parquet manifests returned."""
    lost = tuple(day for day, record in published.items() if record.get("lost"))
    records = {day: record for day, record in published.items() if day not in lost}
    if not records:
        raise NothingToLand(
            f"none of the days {days} can be loaded: hatch/parquet/{source} published them all as lost (nothing "
            "stored, older than the vendor serves)"
        )
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
        rows_by_day={day: result.rows_by_day.get(day, 0) for day in records},
        added_columns=tuple(added),
        jobs=result.jobs,
        lost=lost,
    )


def _bigquery_columns(source: DataSource, names: Sequence[str]) -> dict[str, str]:
    return warehouse.bigquery_columns(column_dtypes(source, names))

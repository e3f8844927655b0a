"""The manifests: the small JSON documents that say what is stored, for raw exports and Parquet builds alike.

Both kinds follow one rule, so one model (`Manifest`) serves both: a manifest's name says when it was written and
which days it covers, and for each day the newest manifest covering it decides (`newest_per_day`). One listing thus
tells which manifest decides each day, and only those are read. What a manifest holds differs by kind: a raw one
names the ZIP of one export (`RawExport`), a Parquet one holds a record per day of its build (`DayRecord`).
Publishing a Parquet manifest retires what it supersedes (`publish_parquet`, `delete_orphans`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, TypeVar

from hatch_pipeline import warehouse
from hatch_pipeline.contract import DataSource, ExportWindow
from hatch_pipeline.storage.keys import (
    MANIFEST_NAME,
    STAMP_FORMAT,
    manifest_key,
    parquet_day_prefix,
    parquet_manifests_prefix,
    parquet_prefix,
    raw_manifests_prefix,
    stamp,
)
from hatch_pipeline.storage.store import ObjectStore, in_parallel

_ONE_DAY: Final = timedelta(days=1)
_D = TypeVar("_D")


@dataclass(frozen=True, order=True)
class Manifest:
    """A manifest of either kind as its name tells it: sorting orders manifests oldest first."""

    token: str
    """The stamp of when it was written (for a Parquet build followed by a random suffix)."""
    window: ExportWindow
    """The days it covers."""
    key: str

    @property
    def written_at(self) -> datetime:
        """When it was written: for a raw manifest, when its export was stored."""
        return datetime.strptime(self.token.split("-", 1)[0], STAMP_FORMAT).replace(tzinfo=UTC)

    def overlaps(self, days: ExportWindow) -> bool:
        return self.window.start <= days.end and days.start <= self.window.end


def parse_manifest_key(key: str) -> Manifest | None:
    """The manifest a key names, or None for anything else under a manifests prefix."""
    match = MANIFEST_NAME.fullmatch(key.rsplit("/", 1)[-1])
    if match is None:
        return None
    window = ExportWindow(date.fromisoformat(match["start"]), date.fromisoformat(match["end"]))
    return Manifest(token=match["token"], window=window, key=key)


def list_manifests(store: ObjectStore, prefix: str) -> list[Manifest]:
    """The manifests under `prefix` (one listing), oldest first."""
    return sorted(manifest for key in store.list(prefix) if (manifest := parse_manifest_key(key)))


def newest_per_day(manifests: Iterable[Manifest], days: Iterable[date]) -> dict[date, Manifest]:
    """For each of `days` that some manifest covers, the newest such manifest, in date order."""
    wanted = set(days)
    newest: dict[date, Manifest] = {}
    for manifest in sorted(manifests):  # oldest first, so newer ones overwrite
        newest |= {day: manifest for day in manifest.window.dates() if day in wanted}
    return dict(sorted(newest.items()))


def _deciding(
    store: ObjectStore, prefix: str, days: Iterable[date] | None, read: Callable[[Manifest], _D]
) -> tuple[dict[date, Manifest], dict[Manifest, _D]]:
    """The newest manifest under `prefix` of each of `days` (every day a manifest covers when None) and what each
    of those manifests holds, read in parallel: one listing, then one read per deciding manifest."""
    manifests = list_manifests(store, prefix)
    wanted = {day for manifest in manifests for day in manifest.window.dates()} if days is None else set(days)
    newest = newest_per_day(manifests, wanted)
    readable = sorted(set(newest.values()))
    return newest, dict(zip(readable, in_parallel(read, readable), strict=True))


# --- raw ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawExport:
    """What a raw manifest holds: one stored export of days, and the ZIP that holds them."""

    source: str
    window: ExportWindow
    exported_at: datetime
    zip: str | None
    """Key of the stored ZIP; None when the vendor answered 204 (no rows), and then the fields below are unset."""
    sha256: str | None = None
    output_format: str | None = None
    compressed_bytes: int = 0
    uncompressed_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "source": self.source,
            "window": [self.window.start.isoformat(), self.window.end.isoformat()],
            "exported_at": self.exported_at.isoformat(),
            "zip": self.zip,
        }
        if self.zip is not None:
            document |= {
                "sha256": self.sha256,
                "output_format": self.output_format,
                "compressed_bytes": self.compressed_bytes,
                "uncompressed_bytes": self.uncompressed_bytes,
            }
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> RawExport:
        start, end = document["window"]
        return cls(
            source=document["source"],
            window=ExportWindow(date.fromisoformat(start), date.fromisoformat(end)),
            exported_at=datetime.fromisoformat(document["exported_at"]),
            zip=document.get("zip"),
            sha256=document.get("sha256"),
            output_format=document.get("output_format"),
            compressed_bytes=int(document.get("compressed_bytes", 0)),
            uncompressed_bytes=int(document.get("uncompressed_bytes", 0)),
        )


def publish_raw(store: ObjectStore, export: RawExport) -> str:
    """Write the manifest that makes the export's days count as stored (after its ZIP, so a day never points at a
    missing file); returns its key."""
    key = manifest_key(raw_manifests_prefix(export.source), stamp(export.exported_at), export.window)
    store.put_json(key, export.to_json())
    return key


def read_raw(store: ObjectStore, manifest: Manifest) -> RawExport:
    """What a raw manifest holds. Raw manifests are never deleted, so FileNotFoundError means one was removed by
    hand."""
    document = store.get_json(manifest.key)
    if document is None:
        raise FileNotFoundError(f"the raw manifest {store.uri(manifest.key)} vanished while it was being read")
    return RawExport.from_json(document)


def newest_raw_exports(
    store: ObjectStore, source: DataSource, days: Iterable[date] | None = None
) -> dict[date, RawExport]:
    """Each day's newest stored export, for the days of `days` (every stored day when None) that have one."""
    newest, exports = _deciding(store, raw_manifests_prefix(source), days, lambda m: read_raw(store, m))
    return {day: exports[manifest] for day, manifest in newest.items()}


# --- parquet ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """The newer export a build declined for a day because it held far fewer rows than were landed: the day keeps
    its landed file and rows."""

    refetched_rows: int
    refetched_zip: str | None
    """Key of the declined ZIP; None for a 204."""


@dataclass(frozen=True)
class DayRecord:
    """A day in a Parquet manifest: its file and columns, and what the checks reconcile it with (the ZIP read, the
    rows read out of it, the columns it carried, the rows moved into the export's window)."""

    file: str | None
    """Key of the day's Parquet file; None for a day without rows."""
    rows: int
    columns: tuple[str, ...] = ()
    raw_zip: str | None = None
    """Key of the ZIP the build read (None for a 204)."""
    vendor_columns: tuple[str, ...] | None = None
    """The columns the export's file carried (None when unknown: an empty export, or an older manifest)."""
    clamped_rows: int = 0
    """Rows dated outside the export's window, moved into it."""
    undated_rows: int = 0
    lost: bool = False
    """Nothing was stored and the vendor no longer serves the day: no file, and the table keeps what it holds."""
    held: Held | None = None
    lineage_recorded: bool = True
    """False for records written before builds named their ZIP: then `raw_zip` is unknown, not a 204."""

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"file": self.file, "rows": self.rows, "columns": list(self.columns)}
        if self.lineage_recorded:
            record["raw_zip"] = self.raw_zip
        record |= {
            "vendor_columns": None if self.vendor_columns is None else list(self.vendor_columns),
            "clamped_rows": self.clamped_rows,
            "undated_rows": self.undated_rows,
        }
        if self.lost:
            record["lost"] = True
        if self.held is not None:
            record["held"] = {"refetched_rows": self.held.refetched_rows, "refetched_zip": self.held.refetched_zip}
        return record

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> DayRecord:
        vendor_columns = record.get("vendor_columns")
        held = record.get("held")
        return cls(
            file=record["file"],
            rows=int(record["rows"]),
            columns=tuple(record["columns"]),
            raw_zip=record.get("raw_zip"),
            vendor_columns=None if vendor_columns is None else tuple(vendor_columns),
            clamped_rows=int(record.get("clamped_rows", 0)),
            undated_rows=int(record.get("undated_rows", 0)),
            lost=bool(record.get("lost", False)),
            held=None if held is None else Held(int(held["refetched_rows"]), held.get("refetched_zip")),
            lineage_recorded="raw_zip" in record,
        )


def read_days(store: ObjectStore, manifest: Manifest) -> dict[date, DayRecord] | None:
    """The day records a Parquet manifest holds; None when a newer build retired it meanwhile."""
    document = store.get_json(manifest.key)
    if document is None:
        return None
    return {date.fromisoformat(day): DayRecord.from_json(record) for day, record in document.get("days", {}).items()}


def published_records(
    store: ObjectStore, source: DataSource, days: Iterable[date] | None = None
) -> dict[date, DayRecord]:
    """The newest manifest's record of each of `days` (every day any manifest covers when None) that has one.

    One listing finds the newest manifest of each day; only those are read (one for a range built in one run).
    """
    newest, documents = _deciding(store, parquet_manifests_prefix(source), days, lambda m: read_days(store, m))
    read = {manifest: records for manifest, records in documents.items() if records is not None}
    if len(read) < len(documents):
        raise warehouse.ParquetReplaced(
            f"a manifest of hatch/parquet/{source} was replaced while it was read; run again"
        )
    return {day: read[manifest][day] for day, manifest in newest.items()}


def publish_parquet(
    store: ObjectStore, source: DataSource, days: ExportWindow, token: str, records: Mapping[date, DayRecord]
) -> str:
    """Write the manifest that makes `records` the range's days, then retire what it supersedes: the older
    manifests' files for these days, and the manifests none of whose days they still decide. Returns its key."""
    prefix = parquet_manifests_prefix(source)
    older = list_manifests(store, prefix)
    ours = Manifest(token=token, window=days, key=manifest_key(prefix, token, days))
    store.put_json(
        ours.key, {"source": source, "days": {day.isoformat(): records[day].to_json() for day in days.dates()}}
    )
    overlapping = [manifest for manifest in older if manifest < ours and manifest.overlaps(days)]
    newest = newest_per_day([*older, ours], {day for manifest in overlapping for day in manifest.window.dates()})
    kept = {record.file for record in records.values()}  # a day held from a shrink keeps its older file
    doomed = [
        record.file
        for superseded in in_parallel(lambda m: read_days(store, m), overlapping)
        for day, record in (superseded or {}).items()
        if days.start <= day <= days.end and record.file and record.file not in kept
    ]
    doomed += [m.key for m in overlapping if all(newest[day] != m for day in m.window.dates())]
    list(in_parallel(store.delete, doomed))
    return ours.key


def delete_orphans(
    store: ObjectStore, source: DataSource, days: ExportWindow, ours: Collection[str | None], grace: timedelta
) -> tuple[str, ...]:
    """Delete the files under the range's day folders that no manifest names and that are older than `grace`.

    One listing finds the day folders' files; only when some are old and not this build's are the manifests of
    those days read, so that a file another manifest still names (a build published since) is kept.
    """
    cutoff = datetime.now(UTC) - grace
    listed = store.list_created(
        parquet_prefix(source), parquet_day_prefix(source, days.start), parquet_day_prefix(source, days.end + _ONE_DAY)
    )
    old = [key for key, created in listed if created < cutoff and key not in ours]
    if not old:
        return ()
    covering = [m for m in list_manifests(store, parquet_manifests_prefix(source)) if m.overlaps(days)]
    named = {
        record.file
        for records in in_parallel(lambda m: read_days(store, m), covering)
        for record in (records or {}).values()
    }
    orphans = tuple(key for key in old if key not in named)
    list(in_parallel(store.delete, orphans))
    return orphans

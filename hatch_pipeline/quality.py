"""What the asset checks verify, as plain functions: gather counts on their own, then name the days that fail.

Nothing here trusts the step it checks. The Parquet side is counted from the stored files' footers, the table by
its own GROUP BY query (warehouse.py), the raw side is what the Parquet build read out of the ZIP it names, and
that ZIP must still be the newest stored export of its day. Each finding maps a day (YYYY-MM-DD) to what was
found, so a check run over a range (recorded without a partition) still says which days fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq

from hatch_pipeline.contract import DataSource, contiguous_windows
from hatch_pipeline.stages import newest_raw_zips, published_records
from hatch_pipeline.storage import ObjectStore
from hatch_pipeline.warehouse import IdCounts

_PARALLEL_READS: Final = 8
Finding = dict[str, Any]


@dataclass(frozen=True)
class StoredDay:
    """What is stored for one day: its newest raw export and what the Parquet stage published for it."""

    newest_raw_zip: str | None
    """Key of the day's newest stored ZIP (None when the vendor answered 204)."""
    published: bool
    """Whether any Parquet build published the day; the fields below are zero or None when not."""
    read_from_raw: int = 0
    """Rows the Parquet build read out of its ZIP for this day (the build fails unless the ZIP's records, counted
    from its bytes, add up to the rows it wrote)."""
    built_from: str | None = None
    """Key of the ZIP that build read (None for a 204)."""
    lineage_recorded: bool = False
    """False for manifests written before builds named their ZIP: then staleness cannot be told."""
    parquet_rows: int | None = None
    """Rows in the day's Parquet file as stored now (0 for a day without rows); None when the file is missing or
    not Parquet."""
    vendor_columns: tuple[str, ...] | None = None
    """The columns the export's file carried (None when unknown: an empty export, or an older manifest)."""
    clamped_rows: int = 0
    undated_rows: int = 0
    lost: bool = False
    """Nothing was stored and the vendor no longer serves the day: published as lost, with nothing to reconcile."""
    held: Finding | None = None
    """The newer export the build declined for holding far fewer rows than were landed (`refetched_rows`,
    `refetched_zip`: None for a 204; see stages.SHRINK_LIMIT); the Parquet keeps the landed rows."""

    @property
    def stale(self) -> bool:
        """The Parquet was built from another export than the newest stored one (e.g. a refetch not parsed yet),
        and not because the build declined the newest one as a shrink."""
        declined = self.held is not None and self.held["refetched_zip"] == self.newest_raw_zip
        return self.lineage_recorded and self.built_from != self.newest_raw_zip and not declined


def stored_days(store: ObjectStore, source: DataSource, days: Sequence[date] | None = None) -> dict[date, StoredDay]:
    """Every day of `days` (None: every day with a stored export) that has a stored export or was published as
    lost, with what the Parquet stage published for it. Reads one listing per kind of manifest, the manifests that
    decide the days, and each day's Parquet footer (a few kilobytes, in parallel)."""
    raw = newest_raw_zips(store, source, days)
    records = published_records(store, source, raw if days is None else days)
    files = [record["file"] for record in records.values() if record.get("file")]
    with ThreadPoolExecutor(_PARALLEL_READS) as pool:
        rows_in = dict(zip(files, pool.map(lambda key: parquet_rows(store, key), files), strict=True))
    stored: dict[date, StoredDay] = {
        day: StoredDay(newest_raw_zip=None, published=True, parquet_rows=0, lost=True)
        for day, record in records.items()
        if day not in raw and record.get("lost")
    }
    for day, raw_zip in raw.items():
        record = records.get(day)
        if record is None:
            stored[day] = StoredDay(newest_raw_zip=raw_zip, published=False)
            continue
        vendor_columns = record.get("vendor_columns")
        stored[day] = StoredDay(
            newest_raw_zip=raw_zip,
            published=True,
            read_from_raw=int(record["rows"]),
            built_from=record.get("raw_zip"),
            lineage_recorded="raw_zip" in record,
            parquet_rows=rows_in[record["file"]] if record.get("file") else 0,
            vendor_columns=tuple(vendor_columns) if vendor_columns else None,
            clamped_rows=int(record.get("clamped_rows", 0)),
            undated_rows=int(record.get("undated_rows", 0)),
            held=record.get("held"),
        )
    return stored


def parquet_rows(store: ObjectStore, key: str) -> int | None:
    """Rows in a stored Parquet file, from its footer; None when the file is missing or not Parquet."""
    try:
        with store.reader(key) as reader:
            return int(pq.read_metadata(reader).num_rows)
    except (FileNotFoundError, pa.ArrowException):
        return None


def raw_parquet_findings(stored: Mapping[date, StoredDay], days: Iterable[date]) -> dict[str, Finding]:
    """Days whose Parquet does not hold exactly the rows of their newest stored export."""
    findings: dict[str, Finding] = {}
    for day in sorted(days):
        found = stored.get(day)
        problem = _raw_parquet_problem(found)
        if problem is not None:
            findings[day.isoformat()] = {"problem": problem} | _counts(found)
    return findings


def _raw_parquet_problem(found: StoredDay | None) -> str | None:
    if found is None:
        return "no raw export is stored for this day"
    if found.lost:
        return None
    if not found.published:
        return "the stored export was never parsed: no Parquet is published"
    if found.stale:
        return "the Parquet was built from an older export than the newest stored one"
    if found.parquet_rows is None:
        return "the Parquet file the manifest names is missing or not Parquet"
    if found.parquet_rows != found.read_from_raw:
        return "the Parquet file holds another number of rows than were read from the export"
    return None


def shrink_findings(stored: Mapping[date, StoredDay], uri: Callable[[str], str]) -> dict[str, Finding]:
    """Days whose newer export was declined for holding far fewer rows than were landed, with both counts and the
    declined ZIP's `uri` (None for a 204)."""
    return {
        day.isoformat(): {
            "landed_rows": found.read_from_raw,
            "refetched_rows": found.held["refetched_rows"],
            "refetched_zip": uri(found.held["refetched_zip"]) if found.held["refetched_zip"] else None,
        }
        for day, found in sorted(stored.items())
        if found.held is not None
    }


def table_findings(
    stored: Mapping[date, StoredDay], table: Mapping[date, int], days: Iterable[date]
) -> dict[str, Finding]:
    """Days whose table rows (its own count) differ from the rows in their stored Parquet file."""
    findings: dict[str, Finding] = {}
    for day in sorted(days):
        found = stored.get(day)
        parquet = found.parquet_rows if found is not None and found.published else None
        if parquet is None or parquet != table.get(day, 0):
            findings[day.isoformat()] = _counts(found) | {"table": table.get(day, 0)}
    return findings


def _counts(found: StoredDay | None) -> Finding:
    if found is None or not found.published:
        return {"raw": None, "parquet": None}
    return {"raw": found.read_from_raw, "parquet": found.parquet_rows}


def repeated_id_findings(counts: Mapping[date, IdCounts]) -> dict[str, Finding]:
    """Days holding an id on more than one row, or rows without an id."""
    return {
        day.isoformat(): {
            "rows": found.rows,
            "extra_rows_of_repeated_ids": found.duplicates,
            "rows_without_id": found.null_ids,
        }
        for day, found in sorted(counts.items())
        if found.duplicates or found.null_ids
    }


@dataclass(frozen=True)
class ColumnDrift:
    """Columns the vendor sent that schemas.py does not document, and documented ones it did not send, each with
    the days (as ranges) it happened on."""

    new: dict[str, list[str]]
    missing: dict[str, list[str]]


def column_drift(stored: Mapping[date, StoredDay], documented: Sequence[str]) -> ColumnDrift:
    new: dict[str, list[date]] = {}
    missing: dict[str, list[date]] = {}
    for day, found in sorted(stored.items()):
        if found.vendor_columns is None:
            continue
        for name in found.vendor_columns:
            if name not in documented:
                new.setdefault(name, []).append(day)
        for name in documented:
            if name not in found.vendor_columns:
                missing.setdefault(name, []).append(day)
    return ColumnDrift(new=_as_ranges(new), missing=_as_ranges(missing))


def _as_ranges(days_by_column: Mapping[str, list[date]]) -> dict[str, list[str]]:
    return {name: [str(window) for window in contiguous_windows(days)] for name, days in days_by_column.items()}


def clamped_findings(stored: Mapping[date, StoredDay]) -> dict[str, Finding]:
    """Days holding rows that were dated outside their export's window (or not dated), and so moved into it."""
    return {
        day.isoformat(): {"dated_outside_window": found.clamped_rows, "undated": found.undated_rows}
        for day, found in sorted(stored.items())
        if found.clamped_rows or found.undated_rows
    }


def due_day(as_of: datetime, fresh_by: time, zone: ZoneInfo) -> date:
    """The newest day that should have landed at `as_of`: yesterday (in `zone`) once today's `fresh_by` has
    passed, else the day before yesterday."""
    local = as_of.astimezone(zone)
    passed = local >= datetime.combine(local.date(), fresh_by, tzinfo=zone)
    return local.date() - timedelta(days=1 if passed else 2)


def deadline_of(day: date, fresh_by: time, zone: ZoneInfo) -> datetime:
    """When `day` should have landed: `fresh_by` on the day after it."""
    return datetime.combine(day + timedelta(days=1), fresh_by, tzinfo=zone)


def summary(findings: Mapping[str, Finding], limit: int = 5) -> str:
    """The first failing days and what was found, for a check's one-line description."""
    shown = "; ".join(
        f"{day} ({', '.join(f'{name} {value}' for name, value in found.items())})"
        for day, found in list(findings.items())[:limit]
    )
    more = f"; and {len(findings) - limit} more" if len(findings) > limit else ""
    return shown + more

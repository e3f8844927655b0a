"""A stored export ZIP → one Parquet file per day, with polars: the fast path, from the ZIP to the published days.

The happy path runs in native code and in bounded memory: the ZIP's member is decompressed in chunks into parts
that end at record boundaries (see `member.py`: a UTF-8 byte-order mark is dropped, line breaks and CSV commas are
counted on the way). A worker thread turns each part, as soon as it is complete, into typed rows (`values.py`)
appended to one Parquet file per day (`day_files.py`), so parsing runs beside decompression and memory holds a
part or two, never the file. The first part settles the columns (`columns.py`); every later NDJSON part is searched
for any other key (`json_keys.py`, much cheaper than inferring), and if one turns up the keys are inferred over
every part and the parts are parsed again. The record-by-record Python pass (`explain.py`) runs only when polars
fails or the counts disagree, to name the line at fault.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from hatch_pipeline.contract import DataSource, ExportWindow
from hatch_pipeline.parsing.columns import check_column_names, columns_of, inferred_columns, inferred_keys
from hatch_pipeline.parsing.day_files import DayFiles
from hatch_pipeline.parsing.explain import check_record_count, explain
from hatch_pipeline.parsing.json_keys import KeySearch, key_search, may_hold_other_keys
from hatch_pipeline.parsing.member import MAX_MEMBER_BYTES, PART_BYTES, Member, MemberFile, extract_member
from hatch_pipeline.parsing.values import read_text, typed_rows
from hatch_pipeline.schemas import HIVE_KEY, LINEAGE_COLUMNS, SCHEMAS, TIMESTAMP, SourceSchema

__all__ = ["ParsedDay", "ParsedExport", "export_day", "parse_export"]

_PARTS_IN_FLIGHT: Final = 2
"""Parts handed on and not yet typed: one being typed while the next waits; more held memory and gained nothing."""


@dataclass(frozen=True)
class ParsedDay:
    """One day of the window: its Parquet file, or None when the export holds no rows for it."""

    day: date
    path: Path | None
    rows: int
    clamped_rows: int = 0
    """Of `rows`, those dated outside the export's window, moved to its nearest edge (see `export_day`)."""
    undated_rows: int = 0
    """Of `rows`, those without a date, placed on the window's last day."""


@dataclass(frozen=True)
class ParsedExport:
    """What one export became: every day of the window in order, and the columns of its Parquet files."""

    rows: int
    days: tuple[ParsedDay, ...]
    columns: tuple[str, ...]
    vendor_columns: tuple[str, ...]
    """The columns the export's file carried, in its order (none for an empty file): `columns` always holds every
    documented one, so this is where a documented column the vendor stopped sending shows."""
    text_columns: Mapping[str, str]
    """Vendor-added columns whose JSON values were not all text, and the type polars inferred for them (e.g.
    "Int64") from the first part of the file (all of it, when a column first appears in a later part): they are
    stored as text anyway, so a later export that sends another type for them still loads."""


def parse_export(
    zip_path: Path,
    *,
    source: DataSource,
    window: ExportWindow,
    out_dir: Path,
    timezone: str,
    source_file: str,
    loaded_at: datetime,
    date_column: str | None = None,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    part_bytes: int = PART_BYTES,
) -> ParsedExport:
    """Write the export's rows to `out_dir/export_date=YYYY-MM-DD.parquet` (zstd), one file per day.

    Each row lands on one day of the window (see `export_day`), so the days' row counts add up to the file's
    records; a mismatch fails rather than losing rows silently. Each day also counts the rows moved into the window
    (`ParsedDay.clamped_rows`, `undated_rows`), so none is moved silently. Every day of the window is settled: its
    file is replaced, or removed when the day has no rows, so parsing the same ZIP again gives the same files; a failure
    leaves out_dir as it was. Rows keep the order of the file. `source_file` (the gs:// URI of the stored ZIP) and
    `loaded_at` are passed in so runs are reproducible; `date_column` picks another documented timestamp than the
    source's default. Memory grows with `part_bytes` (how much of the member is parsed at a time), not the file.
    """
    schema = SCHEMAS[source]
    day_column = _checked_date_column(schema, date_column)
    _check_timezone(timezone)
    if loaded_at.tzinfo is None:
        raise ValueError("loaded_at has no time zone; pass an aware datetime such as datetime.now(UTC)")
    lineage = {
        "_export_date": export_day(pl.col(day_column), window, timezone),
        "_source_file": pl.lit(source_file, pl.String),
        "_loaded_at": pl.lit(loaded_at.astimezone(UTC), TIMESTAMP),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    # Scratch space inside out_dir, so finished files move into place by rename and a failure leaves nothing.
    with (
        tempfile.TemporaryDirectory(prefix=".parsing-", dir=out_dir) as scratch,
        DayFiles(Path(scratch) / "days", "_export_date", _day_file) as day_files,
        _Parts(schema, lineage, _moved(day_column, timezone), day_files) as parts,
    ):
        member = extract_member(
            zip_path, source, window, max_bytes=max_member_bytes, part_bytes=part_bytes, on_part=parts.submit
        )
        parts.finish(member)
        present = parts.columns
        rows = sum(parts.days.rows.values())
        if present:
            check_record_count(member, rows, len(present), parts.commas_in_values)
        staged_rows = {day: parts.days.rows.get(day, 0) for day in window.dates()}
        days = tuple(
            _publish(Path(scratch) / "days", out_dir, day, count, *parts.moved.get(day, (0, 0)))
            for day, count in staged_rows.items()
        )
    extras = sorted(present.keys() - schema.columns.keys())
    text_columns = {name: str(present[name]) for name in extras if present[name] not in (pl.String(), pl.Null())}
    return ParsedExport(
        rows=rows,
        days=days,
        columns=(*schema.columns, *extras, *LINEAGE_COLUMNS),
        vendor_columns=tuple(present),
        text_columns=text_columns,
    )


class _Parts:
    """Turns the member's parts into rows of the day files while decompression goes on, in stages on threads of
    their own: the search of each NDJSON part for other keys, then reading and typing (in part order), then writing.

    The first part settles the columns; an NDJSON part that may hold another key is inferred, and if it does the
    work stops and `finish` parses every part again with the keys of the whole file. A polars failure stops the
    work too: `finish` explains it from the whole member, by line.
    """

    def __init__(
        self, schema: SourceSchema, lineage: Mapping[str, pl.Expr], moved: Mapping[str, pl.Expr], days: DayFiles
    ) -> None:
        self.columns: dict[str, pl.DataType] = {}
        """The file's columns in its order, with the type polars inferred (CSV: all text)."""
        self.commas_in_values = 0
        self.moved: dict[date, tuple[int, int]] = {}
        """Per day, the rows `export_day` moved there: (dated outside the window, undated)."""
        self.days = days
        self._schema = schema
        self._lineage = lineage
        self._moved = moved
        self._searches = ThreadPoolExecutor(1, thread_name_prefix="hatch-parse-search")
        self._conversions = ThreadPoolExecutor(1, thread_name_prefix="hatch-parse")
        self._pending: list[Future[None]] = []
        self._room = threading.Semaphore(_PARTS_IN_FLIGHT)
        self._other_keys: KeySearch | None = None
        """NDJSON: the search for a key that is neither documented nor among the first part's keys."""
        self._columns_settled = threading.Event()
        self._new_keys = False
        self._failure: pl.exceptions.PolarsError | None = None

    def __enter__(self) -> _Parts:
        return self

    def __exit__(self, *_: object) -> None:
        self._columns_settled.set()  # no search waits for a first part that will not come
        self._searches.shutdown(cancel_futures=True)
        self._conversions.shutdown(cancel_futures=True)  # the day files close next: their context was entered first

    def submit(self, file: MemberFile, part: bytes) -> None:
        """Queue a part; waits while `_PARTS_IN_FLIGHT` parts are not yet written, so decompression running ahead
        holds at most that many in memory."""
        self._room.acquire()
        first = not self._pending
        search = None if first or file.format != "json" else self._searches.submit(self._may_hold_other_keys, part)
        conversion = self._conversions.submit(self._convert, file, part, first, search)
        conversion.add_done_callback(lambda _: self._room.release())
        self._pending.append(conversion)

    def finish(self, member: Member) -> None:
        """Wait for the work; then explain its failure, or parse every part again if a later one held a new key."""
        for pending in self._pending:
            pending.result()
        if self._failure is not None:
            raise explain(member, self._failure, self._schema, _text_columns(member, self._schema, self.columns))
        if self._new_keys:
            self.columns = inferred_columns(member)
            check_column_names(member, self._schema, self.columns)
            self.days.discard()
            self.commas_in_values = 0
            self.moved = {}
            for part in member.parts():
                self._write(member, part)
        self.days.close()

    def _convert(self, file: MemberFile, part: bytes, first: bool, search: Future[bool] | None) -> None:
        if self._new_keys or self._failure is not None:
            return
        try:
            if first:
                try:
                    self._settle_columns(file, part)
                finally:
                    self._columns_settled.set()
            elif search is not None and search.result() and self._holds_new_keys(part):
                self._new_keys = True
                return
            self._write(file, part)
        except pl.exceptions.PolarsError as error:
            self._failure = error

    def _settle_columns(self, file: MemberFile, part: bytes) -> None:
        self.columns = columns_of(file, part)
        check_column_names(file, self._schema, self.columns)
        if file.format == "json":
            self._other_keys = key_search({*self._schema.columns, *self.columns})

    def _may_hold_other_keys(self, part: bytes) -> bool:
        """The cheap search, once the first part has settled the columns (a first part that failed: no search)."""
        self._columns_settled.wait()
        return self._other_keys is not None and may_hold_other_keys(part, self._other_keys)

    def _holds_new_keys(self, part: bytes) -> bool:
        """Whether an NDJSON part in which the search found a candidate holds a key neither documented nor in the
        first part, inferred exactly."""
        return bool(inferred_keys(part).keys() - self._schema.columns.keys() - self.columns.keys())

    def _write(self, file: MemberFile, part: bytes) -> None:
        """Read a part as text, type it and append it to the day files."""
        if not self.columns:
            return  # an empty file
        present = _text_columns(file, self._schema, self.columns)
        text = read_text(file, part, present)
        if file.format == "csv":
            commas = (pl.col(name).str.count_matches(",", literal=True).sum() for name in text.columns)
            self.commas_in_values += int(text.select(pl.sum_horizontal(commas)).item())
        extras = sorted(self.columns.keys() - self._schema.columns.keys())
        rows = typed_rows(text, self._schema, present, extras).with_columns(**self._lineage)
        self._count_moved(rows)
        self.days.write(rows)

    def _count_moved(self, rows: pl.DataFrame) -> None:
        """Add up the rows moved into the window, per day; grouped by day only in a part that has any."""
        sums = {name: flag.sum() for name, flag in self._moved.items()}
        if not any(rows.select(**sums).row(0)):
            return
        counts = rows.group_by("_export_date").agg(**sums)
        for day, clamped, undated in counts.iter_rows():
            before = self.moved.get(day, (0, 0))
            self.moved[day] = (before[0] + clamped, before[1] + undated)


def _text_columns(file: MemberFile, schema: SourceSchema, columns: Collection[str]) -> list[str]:
    """The columns read as text: CSV's header; for NDJSON every documented key too, since a later part may hold
    one the first did not (polars gives null where a line lacks a key)."""
    if file.format == "json":
        return list(dict.fromkeys([*schema.columns, *columns]))
    return list(columns)


def export_day(timestamp: pl.Expr, window: ExportWindow, timezone: str) -> pl.Expr:
    """The day of the window a row belongs to, as a Date expression; no row is ever dropped.

    A row belongs to the day of its timestamp in `timezone` (an IANA name; never the machine's local time).
    A row dated before the window goes to its first day; one dated after it, or not dated at all, to its last
    day. So a one-day export's rows all belong to its day, whatever their timestamps say.
    Why: the BigQuery stage replaces exactly the window's days with this export's rows. A row placed outside
    the window would land in a day that another export owns; that export's replacement would then delete it,
    or, if that export holds the row too, store it twice. Kept inside its own window, a row lives and dies
    with the export it came from.
    """
    local_day = timestamp.dt.convert_time_zone(timezone).dt.date()
    return local_day.fill_null(window.end).clip(window.start, window.end)


def _checked_date_column(schema: SourceSchema, date_column: str | None) -> str:
    column = schema.date_column if date_column is None else date_column
    if column not in schema.timestamp_columns:
        raise ValueError(
            f"date column {column!r} is not a documented timestamp of {schema.source}; "
            f"choose one of {', '.join(schema.timestamp_columns)}"
        )
    return column


def _check_timezone(timezone: str) -> None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"timezone {timezone!r} is not an IANA time zone name; use one such as 'UTC' or 'America/Los_Angeles'"
        ) from None


def _day_file(day: date) -> str:
    """A day's file, side by side with the others: a folder per day cost a mkdir per day, which on ext4 after a
    burst of deletions took as long as writing the day's rows."""
    return f"{HIVE_KEY}={day.isoformat()}.parquet"


def _moved(day_column: str, timezone: str) -> dict[str, pl.Expr]:
    """Per row, whether `export_day` moved it into the window: dated outside it, or undated."""
    own_day = pl.col(day_column).dt.convert_time_zone(timezone).dt.date()
    return {"clamped": own_day != pl.col("_export_date"), "undated": pl.col(day_column).is_null()}


def _publish(staged: Path, out_dir: Path, day: date, rows: int, clamped: int, undated: int) -> ParsedDay:
    """Move a day's staged file into out_dir, or remove an older file when the day now has no rows."""
    target = out_dir / _day_file(day)
    if not rows:
        target.unlink(missing_ok=True)
        return ParsedDay(day=day, path=None, rows=0)
    (staged / _day_file(day)).replace(target)
    return ParsedDay(day=day, path=target, rows=rows, clamped_rows=clamped, undated_rows=undated)

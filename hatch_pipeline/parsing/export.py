"""A stored export ZIP → one Parquet file per day, with polars.

The happy path runs in native code and in bounded memory: the ZIP's member is decompressed in chunks into parts
that end at record boundaries (see `member.py`: a UTF-8 byte-order mark is dropped, line breaks and CSV commas are
counted on the way). A worker thread turns each part, as soon as it is complete, into typed rows appended to one
Parquet file per day (`day_files.py`), so parsing runs beside decompression and memory holds a part or two,
never the file. The columns come from the CSV header, or from the keys polars infers over the first NDJSON part;
every later NDJSON part is searched for any other key (`json_keys.py`, much cheaper than inferring), and if one
turns up the keys are inferred over every part and the parts are parsed again, so a column that first appears deep
inside a file is kept. The names are checked against what BigQuery accepts before any row is written. The
record-by-record Python pass runs only when polars fails or the counts disagree, to name the line at fault.

Values arrive as the vendor sent them wherever the format can say it:
- NDJSON: every value is read as text first. "" stays "", null (or a missing key) stays null, numbers and
  booleans keep their JSON text (polars writes numbers in their shortest form: 1.0 becomes "1", 1e-7
  "0.0000001"), objects and arrays become their JSON text.
- CSV (RFC 4180): an unquoted empty field is null, a quoted empty field ("") is the empty string. The vendor writes
  null and "" alike as an empty field, so its CSV cannot carry "": such values arrive as null.
- Documented typed columns (timestamps, booleans, numbers) parse strictly; an empty string there is null.
- Columns the vendor adds stay text whatever JSON type their values have, so a column whose values change type
  from one export to the next keeps every value; `ParsedExport.text_columns` names those that held non-text JSON.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import islice
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from hatch_pipeline.contract import DataSource, ExportWindow
from hatch_pipeline.parsing.day_files import DayFiles
from hatch_pipeline.parsing.json_keys import may_hold_other_keys, other_key_pattern
from hatch_pipeline.parsing.member import (
    MAX_MEMBER_BYTES,
    PART_BYTES,
    MalformedExport,
    Member,
    MemberFile,
    extract_member,
)
from hatch_pipeline.schemas import LINEAGE_COLUMNS, SCHEMAS, TIMESTAMP, SourceSchema
from hatch_pipeline.warehouse import column_name_problem

__all__ = ["HIVE_KEY", "ParsedDay", "ParsedExport", "export_day", "parse_export"]

HIVE_KEY: Final = "export_date"
"""The key of the Parquet folders in the bucket (`export_date=YYYY-MM-DD/`); BigQuery's hive-partitioned load adds it
as a column, so no vendor column may take its name."""
_MAX_FIELD_CHARS: Final = 100_000_000
"""The vendor's payload limit; Python's csv default of 128 KiB per field is too small for long email bodies."""

_TIMESTAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%S%.f%#z"
"""ISO-8601 with a `Z` or a `±hh:mm` offset; the fraction is optional (chrono's `%.f`)."""
_SECONDS_FORMAT: Final = "%Y-%m-%dT%H:%M:%S"
"""Its first 19 characters, which polars parses in native code (see `_utc_timestamp`)."""

_PARTS_IN_FLIGHT: Final = 2
"""Parts handed on and not yet typed: one being typed while the next waits; more held memory and gained nothing."""

_BOOLEANS: Final = {"true": True, "false": False}
_EXPECTED_FORM: Final[dict[pl.DataType, str]] = {
    TIMESTAMP: "an ISO-8601 timestamp with Z or an offset, like 2026-11-20T23:59:58.123Z",
    pl.Boolean(): "a boolean (true or false)",
    pl.Float64(): "a number",
}
_ROW_INDEX: Final = "_row"
_NAME_FIX: Final = (
    "Nothing was written and the stored ZIP is kept: report the column to Hatch, and re-export the window once they "
    "have renamed it."
)


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
        _Parts(
            schema, lineage, _moved(day_column, timezone), DayFiles(Path(scratch) / "days", "_export_date", _day_file)
        ) as parts,
    ):
        member = extract_member(
            zip_path, source, window, max_bytes=max_member_bytes, part_bytes=part_bytes, on_part=parts.submit
        )
        parts.finish(member)
        present = parts.columns
        rows = sum(parts.days.rows.values())
        if present:
            _check_record_count(member, rows, len(present), parts.commas_in_values)
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
        self._other_keys: str | None = None
        """NDJSON: the expression for a key that is neither documented nor among the first part's keys."""
        self._columns_settled = threading.Event()
        self._new_keys = False
        self._failure: pl.exceptions.PolarsError | None = None

    def __enter__(self) -> _Parts:
        return self

    def __exit__(self, *_: object) -> None:
        self._columns_settled.set()  # no search waits for a first part that will not come
        self._searches.shutdown(cancel_futures=True)
        self._conversions.shutdown(cancel_futures=True)
        self.days.close()

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
            raise _explain(member, self._failure, self._schema, _text_columns(member, self._schema, self.columns))
        if self._new_keys:
            self.columns = _inferred_columns(member)
            _check_column_names(member, self._schema, self.columns)
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
            elif search is not None and search.result() and self._holds_new_keys(file, part):
                self._new_keys = True
                return
            self._write(file, part)
        except pl.exceptions.PolarsError as error:
            self._failure = error

    def _settle_columns(self, file: MemberFile, part: bytes) -> None:
        self.columns = _columns_of(file, part)
        _check_column_names(file, self._schema, self.columns)
        if file.format == "json":
            self._other_keys = other_key_pattern({*self._schema.columns, *self.columns})

    def _may_hold_other_keys(self, part: bytes) -> bool:
        """The cheap search, once the first part has settled the columns (a first part that failed: no search)."""
        self._columns_settled.wait()
        return self._other_keys is not None and may_hold_other_keys(part, self._other_keys)

    def _holds_new_keys(self, file: MemberFile, part: bytes) -> bool:
        """Whether an NDJSON part in which the search found a candidate holds a key neither documented nor in the
        first part, inferred exactly."""
        return bool(_inferred(file, part).keys() - self._schema.columns.keys() - self.columns.keys())

    def _write(self, file: MemberFile, part: bytes) -> None:
        """Read a part as text, type it and append it to the day files."""
        if not self.columns:
            return  # an empty file
        present = _text_columns(file, self._schema, self.columns)
        text = _read_text(file, part, present)
        if file.format == "csv":
            commas = (pl.col(name).str.count_matches(",", literal=True).sum() for name in text.columns)
            self.commas_in_values += int(text.select(pl.sum_horizontal(commas)).item())
        extras = sorted(self.columns.keys() - self._schema.columns.keys())
        rows = _typed_rows(text, self._schema, present, extras).with_columns(**self._lineage)
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


def _columns_of(file: MemberFile, part: bytes) -> dict[str, pl.DataType]:
    """The columns of the file's first part, in its order, with the type polars infers (CSV: all text).

    NDJSON: the keys polars infers over the whole part. CSV: the header, read with Python's csv module so that
    duplicate names are seen as they are (polars renames them).
    """
    if file.format == "json":
        return _inferred(file, part) if part else {}
    with io.TextIOWrapper(io.BytesIO(part), encoding="utf-8", newline="") as text:
        try:
            header = next(csv.reader(text, strict=True), [])
        except (csv.Error, UnicodeDecodeError) as error:
            raise file.malformed(f"the header is not valid UTF-8 CSV ({error})", 1) from None
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise file.malformed(f"the header names {', '.join(map(repr, duplicated))} more than once", 1)
    return dict.fromkeys(header, pl.String())


def _inferred(file: MemberFile, part: bytes) -> dict[str, pl.DataType]:
    """The keys of an NDJSON part and their types, as polars infers them over every line of it."""
    return dict(pl.scan_ndjson(part, infer_schema_length=None).collect_schema())


def _inferred_columns(member: Member) -> dict[str, pl.DataType]:
    """The keys of every part, in the order they first appear, each with the supertype of its inferred types."""
    columns: dict[str, pl.DataType] = {}
    for part in member.parts():
        for name, dtype in _inferred(member, part).items():
            columns[name] = _supertype(columns.get(name, pl.Null()), dtype)
    return columns


def _supertype(first: pl.DataType, second: pl.DataType) -> pl.DataType:
    """The type polars would give a column holding values of both types (text when it has none)."""
    if first == second or second == pl.Null():
        return first
    if first == pl.Null():
        return second
    frames = [pl.DataFrame(schema={"value": dtype}) for dtype in (first, second)]
    try:
        return pl.concat(frames, how="vertical_relaxed").schema["value"]
    except pl.exceptions.PolarsError:
        return pl.String()


def _check_column_names(member: MemberFile, schema: SourceSchema, present: Collection[str]) -> None:
    """Refuse, before anything is written, a column BigQuery cannot take or that would clash in the table.

    BigQuery column names are case-insensitive, so names that differ only in case (also from a documented column,
    which the table always has) clash; a vendor column named like a lineage column or the folder key would
    overwrite it.
    """
    ours = {name.lower(): name for name in (*LINEAGE_COLUMNS, HIVE_KEY)}
    taken = {name.lower(): name for name in schema.columns}
    for name in present:
        problem = column_name_problem(name)
        if problem is not None:
            raise member.malformed(f"column {name!r} cannot be loaded into BigQuery: {problem}", fix=_NAME_FIX)
        key = name.lower()
        if key in ours:
            raise member.malformed(
                f"column {name!r} has the name of the pipeline's own column {ours[key]!r}", fix=_NAME_FIX
            )
        other = taken.get(key, name)
        if other != name:
            raise member.malformed(
                f"columns {other!r} and {name!r} differ only in case, and BigQuery column names are case-insensitive",
                fix=_NAME_FIX,
            )
        taken[key] = name


def _record_count(member: Member) -> int:
    """The member's records, counted by the Python pass (which raises at the first defect it finds)."""
    return sum(1 for _ in _record_lines(member))


def _line_of_row(member: Member, row: int) -> int:
    return next(islice(_record_lines(member), row, None))


def _record_lines(member: Member) -> Iterator[int]:
    """Check each record of the member and yield the line it starts on (the slow path: only to explain a failure).

    The records come in the order polars reads them, so the n-th yielded line is the line of polars' row n.
    """
    lines = _utf8_lines(member, member.binary_lines())
    if member.format == "json":
        yield from _ndjson_record_lines(member, lines)
    else:
        yield from _csv_record_lines(member, lines)


def _utf8_lines(member: Member, binary: Iterable[bytes]) -> Iterator[str]:
    for number, raw in enumerate(binary, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            raise member.malformed("the line is not UTF-8 text", number) from None


def _ndjson_record_lines(member: Member, lines: Iterator[str]) -> Iterator[int]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # polars skips blank lines too
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise member.malformed(
                f"the line is not valid JSON ({error.msg} at column {error.colno})", number
            ) from None
        if not isinstance(record, dict):
            raise member.malformed(f"the line holds a JSON {type(record).__name__}, not an object", number)
        yield number


def _csv_record_lines(member: Member, lines: Iterator[str]) -> Iterator[int]:
    csv.field_size_limit(max(csv.field_size_limit(), _MAX_FIELD_CHARS))
    reader = csv.reader(lines, strict=True)
    start = 1
    try:
        header = next(reader, None)
        if header is None:
            return
        start = reader.line_num + 1
        for record in reader:
            if len(record) != len(header):
                raise member.malformed(
                    f"the row has {len(record)} fields but the header has {len(header)}; "
                    "fields holding commas, quotes or line breaks must be quoted (RFC 4180)",
                    start,
                )
            yield start
            start = reader.line_num + 1
    except csv.Error as error:
        raise member.malformed(f"the row is not valid CSV ({error})", start) from None


def _read_text(file: MemberFile, part: bytes, columns: Collection[str]) -> pl.DataFrame:
    """Every column of a part as text (CSV: the part's header; NDJSON: `columns`)."""
    if file.format == "json":
        return pl.read_ndjson(part, schema=dict.fromkeys(columns, pl.String))
    return pl.read_csv(part, infer_schema=False)


def _typed(name: str, dtype: pl.DataType, *, strict: bool) -> pl.Expr:
    """Text → the documented type, "" as null; `strict` fails on a value that does not parse, otherwise null."""
    text = pl.when(pl.col(name) != "").then(pl.col(name))
    if dtype == TIMESTAMP:
        return text.str.to_datetime(_TIMESTAMP_FORMAT, time_unit="us", time_zone="UTC", strict=strict)
    if dtype == pl.Boolean():
        if strict:
            return text.replace_strict(_BOOLEANS, return_dtype=pl.Boolean)
        return text.replace_strict(_BOOLEANS, default=None, return_dtype=pl.Boolean)
    if dtype == pl.String():
        return pl.col(name)
    return text.cast(dtype, strict=strict)


def _typed_rows(text: pl.DataFrame, schema: SourceSchema, present: Collection[str], extras: list[str]) -> pl.DataFrame:
    """Documented columns typed, in schema order (all null when absent from the file), then extras as text.

    Timestamps are first parsed the fast way (`_utc_timestamp`); a column holding any other form is parsed again
    by the full rule, which raises at a value that does not parse.
    """
    documented = {
        name: (_utc_timestamp(name) if dtype == TIMESTAMP else _typed(name, dtype, strict=True))
        if name in present
        else pl.lit(None, dtype)
        for name, dtype in schema.columns.items()
    }
    written = [name for name, dtype in schema.columns.items() if dtype == TIMESTAMP and name in present]
    counts = text.select(_written(name).sum() for name in written).row(0) if written else ()
    typed = text.select(*(expr.alias(name) for name, expr in documented.items()), *extras)
    missed = [name for name, count in zip(written, counts, strict=True) if typed[name].count() != count]
    if missed:
        typed = typed.with_columns(text.select(_typed(name, TIMESTAMP, strict=True).alias(name) for name in missed))
    return typed


def _written(name: str) -> pl.Expr:
    return pl.col(name).is_not_null() & (pl.col(name) != "")


def _utc_timestamp(name: str) -> pl.Expr:
    """A timestamp written in UTC with `Z`, as the vendor writes them (`2026-11-20T23:59:58.123Z`), or null for
    any other form, which the caller then parses by the full rule.

    polars parses `%Y-%m-%dT%H:%M:%S` in native code; a format with a fraction or an offset goes through chrono
    value by value, several times slower. So the first 19 characters are parsed that way and the fraction is
    added as microseconds (truncated, as chrono's `%.f` does). It reads no value differently from the full rule.
    """
    text = pl.col(name)
    seconds = text.str.slice(0, 19).str.to_datetime(_SECONDS_FORMAT, time_unit="us", strict=False, cache=False)
    rest = text.str.slice(19)
    fraction = rest.str.extract(r"^\.(\d{1,9})Z$").str.slice(0, 6).str.pad_end(6, "0").cast(pl.Int64)
    micros = pl.when(rest == "Z").then(0).otherwise(fraction)
    return (seconds + pl.duration(microseconds=micros)).dt.replace_time_zone("UTC")


def _check_record_count(member: Member, rows: int, columns: int, commas_in_values: int) -> None:
    """Fail unless polars read every record of the file once, checked from the counts taken while decompressing.

    NDJSON: one record per line. CSV: each of the header and the records holds `columns - 1` separators, and any
    other comma sits inside a value, so a row with missing fields shows as missing commas. When the counts differ
    (blank NDJSON lines do that harmlessly), the Python pass counts the records itself and names any defect.
    """
    if member.format == "json":
        expected = member.line_breaks + (0 if member.ends_with_line_break else 1)
        matches = rows == expected
    else:
        matches = member.commas == (columns - 1) * (rows + 1) + commas_in_values
    if not matches and _record_count(member) != rows:
        raise member.malformed(
            f"polars read {rows} rows but the file holds {_record_count(member)} records "
            "(the readers disagree on its quoting or line structure)"
        )


def _explain(
    member: Member, error: pl.exceptions.PolarsError, schema: SourceSchema, present: Collection[str]
) -> MalformedExport:
    """Why polars failed, named by line: the Python pass raises at the first broken record; otherwise the first
    value that does not parse as its documented type; otherwise polars' own words."""
    _record_count(member)
    unparseable = _unparseable_value(member, schema, present)
    if unparseable is not None:
        return unparseable
    return member.malformed(f"polars could not read it ({str(error).splitlines()[0]})")


def _unparseable_value(member: Member, schema: SourceSchema, present: Collection[str]) -> MalformedExport | None:
    """The first value that does not parse as its documented type, with its line (read part by part, as
    `_Parts` reads them, so the row numbers are polars')."""
    checks = {
        name: pl.col(name).is_not_null() & (pl.col(name) != "") & _typed(name, dtype, strict=False).is_null()
        for name, dtype in schema.columns.items()
        if name in present and dtype != pl.String()
    }
    rows = 0
    for part in member.parts() if checks else ():
        text = _read_text(member, part, present)
        found = text.with_row_index(_ROW_INDEX, rows).filter(pl.any_horizontal(*checks.values())).head(1)
        rows += text.height
        if found.is_empty():
            continue
        name = next(name for name, check in checks.items() if found.select(check).item())
        value: str = found.item(0, name)
        line = _line_of_row(member, found.item(0, _ROW_INDEX))
        return member.malformed(
            f"{name} holds {value[:60]!r}, which is not {_EXPECTED_FORM[schema.columns[name]]}", line
        )
    return None


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

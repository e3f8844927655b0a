"""A stored export ZIP → one Parquet file per day, with polars.

The happy path runs in polars' native code: the ZIP's member is decompressed to a temp file in chunks (dropping a
UTF-8 byte-order mark and counting line breaks or commas on the way); polars finds every column (an NDJSON scan
infers over the whole file, so a column that first appears deep inside it is kept; a CSV names them in its
header), the names are checked against what BigQuery accepts, and polars scans the file lazily, types it and sinks
it partitioned by day, never collecting a DataFrame. The record-by-record Python pass runs only when polars fails
or the counts disagree, to name the line at fault.

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
import json
import tempfile
import zipfile
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import islice
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
from polars.io.partition import FileProviderArgs

from hatch_pipeline.contract import DataSource, ExportWindow, OutputFormat
from hatch_pipeline.schemas import LINEAGE_COLUMNS, SCHEMAS, TIMESTAMP, SourceSchema
from hatch_pipeline.warehouse import column_name_problem

__all__ = [
    "HIVE_KEY",
    "LINEAGE_COLUMNS",
    "MAX_MEMBER_BYTES",
    "SCHEMAS",
    "MalformedExport",
    "ParsedDay",
    "ParsedExport",
    "SourceSchema",
    "export_day",
    "parse_export",
]

_CHUNK_BYTES: Final = 1 << 20
_BOM: Final = b"\xef\xbb\xbf"
MAX_MEMBER_BYTES: Final = 1_000_000_000
"""Largest member we decompress: ten times the vendor's 100 MB payload limit, so a zip bomb stops here."""
HIVE_KEY: Final = "export_date"
"""The key of the Parquet folders (`export_date=YYYY-MM-DD/`); BigQuery's hive-partitioned load adds it as a column."""
_MAX_FIELD_CHARS: Final = 100_000_000
"""The vendor's payload limit; Python's csv default of 128 KiB per field is too small for long email bodies."""

_TIMESTAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%S%.f%#z"
"""ISO-8601 with a `Z` or a `±hh:mm` offset; the fraction is optional (chrono's `%.f`)."""

_BOOLEANS: Final = {"true": True, "false": False}
_EXPECTED_FORM: Final[dict[pl.DataType, str]] = {
    TIMESTAMP: "an ISO-8601 timestamp with Z or an offset, like 2026-11-20T23:59:58.123Z",
    pl.Boolean(): "a boolean (true or false)",
    pl.Float64(): "a number",
}
_DAY_DIRECTORY: Final = HIVE_KEY
_DAY_FILE: Final = "part-0.parquet"
_ROW_INDEX: Final = "_row"
_VENDOR_FIX: Final = (
    "The stored ZIP is kept as the vendor sent it: report the file and line to Hatch, "
    "and re-export the window once they have fixed the data."
)
_NAME_FIX: Final = (
    "Nothing was written and the stored ZIP is kept: report the column to Hatch, and re-export the window once they "
    "have renamed it."
)


class MalformedExport(ValueError):
    """A stored export breaks the vendor's format; the message names the ZIP, its member, the line and the fix."""

    def __init__(
        self, zip_path: Path, member: str | None, problem: str, line: int | None = None, fix: str = _VENDOR_FIX
    ) -> None:
        where = str(zip_path)
        if member is not None:
            where += f", member {member!r}"
        if line is not None:
            where += f", line {line}"
        super().__init__(f"Malformed export ({where}): {problem}. {fix}")
        self.zip_path = zip_path
        self.member = member
        self.line = line


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
    """Vendor-added columns whose JSON values were not all text, and the type polars saw (e.g. "Int64"): they are
    stored as text anyway, so a later export that sends another type for them still loads."""


@dataclass(frozen=True)
class _Member:
    """The export's one file, decompressed to `path`, how to name it in errors, and what the copy counted."""

    zip_path: Path
    name: str
    path: Path
    format: OutputFormat
    size: int
    line_breaks: int
    """b"\\n" bytes in the file: with a final line break, the number of NDJSON lines."""
    commas: int
    """b"," bytes in a CSV file (not counted for NDJSON): separators plus commas inside quoted fields."""
    ends_with_line_break: bool

    def malformed(self, problem: str, line: int | None = None, fix: str = _VENDOR_FIX) -> MalformedExport:
        return MalformedExport(self.zip_path, self.name, problem, line, fix)


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
) -> ParsedExport:
    """Write the export's rows to `out_dir/export_date=YYYY-MM-DD/part-0.parquet` (zstd), one file per day.

    Each row lands on one day of the window (see `export_day`), so the days' row counts add up to the file's
    records; a mismatch fails rather than losing rows silently. Each day also counts the rows moved into the window
    (`ParsedDay.clamped_rows`, `undated_rows`), so none is moved silently. Every day of the window is settled: its
    file is replaced, or removed when the day has no rows, so parsing the same ZIP again gives the same files; a failure
    leaves out_dir as it was. Rows keep the order of the file. `source_file` (the gs:// URI of the stored ZIP) and
    `loaded_at` are passed in so runs are reproducible; `date_column` picks another documented timestamp than the
    source's default.
    """
    schema = SCHEMAS[source]
    day_column = _checked_date_column(schema, date_column)
    _check_timezone(timezone)
    if loaded_at.tzinfo is None:
        raise ValueError("loaded_at has no time zone; pass an aware datetime such as datetime.now(UTC)")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Scratch space inside out_dir, so finished files move into place by rename and a failure leaves nothing.
    with tempfile.TemporaryDirectory(prefix=".parsing-", dir=out_dir) as scratch:
        member = _extract_member(zip_path, source, window, Path(scratch), max_member_bytes)
        present = _columns_of(member) if member.size else {}
        _check_column_names(member, schema, present)
        extras = sorted(present.keys() - schema.columns.keys())
        staged = Path(scratch) / "days"
        if present:
            text = _scan_text(member, list(present))
            typed = _typed_rows(text, schema, present, extras).with_columns(
                _export_date=export_day(pl.col(day_column), window, timezone),
                _source_file=pl.lit(source_file, pl.String),
                _loaded_at=pl.lit(loaded_at.astimezone(UTC), TIMESTAMP),
            )
            commas_in_values = _sink_by_day(member, text, typed, staged, schema, present)
        staged_rows = _staged_rows(staged, window)
        rows = sum(staged_rows.values())
        if present:
            _check_record_count(member, rows, len(present), commas_in_values)
        moved = _moved_rows(staged, day_column, timezone) if rows else {}
        days = tuple(
            _publish(staged, out_dir, day, count, *moved.get(day, (0, 0))) for day, count in staged_rows.items()
        )
    text_columns = {name: str(present[name]) for name in extras if present[name] not in (pl.String(), pl.Null())}
    return ParsedExport(
        rows=rows,
        days=days,
        columns=(*schema.columns, *extras, *LINEAGE_COLUMNS),
        vendor_columns=tuple(present),
        text_columns=text_columns,
    )


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


def _extract_member(zip_path: Path, source: DataSource, window: ExportWindow, scratch: Path, max_bytes: int) -> _Member:
    """Decompress the ZIP's one member in chunks, after checking it is the file the contract names.

    The member is written to a fixed name in `scratch`, never to a path taken from the archive. A UTF-8 byte-order
    mark at its start is dropped (neither reader wants it); line breaks (and, for CSV, commas) are counted on the way
    so the happy path can check polars' record count without reading the file again.
    """
    stem = f"{source}_{window.start.isoformat()}_{window.end.isoformat()}"
    expected: dict[str, OutputFormat] = {f"{stem}.json": "json", f"{stem}.csv": "csv"}
    try:
        with zipfile.ZipFile(zip_path) as archive:
            infos = archive.infolist()
            if len(infos) != 1 or infos[0].filename not in expected:
                found = ", ".join(repr(info.filename) for info in infos) or "no member"
                raise MalformedExport(
                    zip_path,
                    None,
                    f"expected exactly one member named {stem}.json or {stem}.csv, found {found}",
                    fix=f"Check that this ZIP is the {source} export for {window}; if it is, report it to Hatch.",
                )
            info = infos[0]
            output_format = expected[info.filename]
            path = scratch / f"member.{output_format}"
            size = line_breaks = commas = 0
            last = b""
            with archive.open(info) as packed, path.open("wb") as unpacked:
                while chunk := packed.read(_CHUNK_BYTES):
                    if not size:
                        chunk = chunk.removeprefix(_BOM)
                    size += len(chunk)
                    if size > max_bytes or info.file_size > max_bytes:
                        raise MalformedExport(
                            zip_path,
                            info.filename,
                            f"the member decompresses to more than {max_bytes:,} bytes (a zip bomb, or far above "
                            "the vendor's 100 MB payload limit)",
                            fix="The stored ZIP is kept. If Hatch really sent this, raise max_member_bytes.",
                        )
                    line_breaks += chunk.count(b"\n")
                    if output_format == "csv":
                        commas += chunk.count(b",")
                    unpacked.write(chunk)
                    last = chunk[-1:] or last
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise MalformedExport(zip_path, None, f"not a readable ZIP archive ({error})") from None
    return _Member(zip_path, info.filename, path, output_format, size, line_breaks, commas, last == b"\n")


def _columns_of(member: _Member) -> dict[str, pl.DataType]:
    """Every column of the member, in the file's order, with the type polars infers (CSV: all text).

    NDJSON: inferred over the whole file in native code, so a key first seen on the last line counts. CSV: the
    header, read with Python's csv module so that duplicate names are seen as they are (polars renames them).
    """
    if member.format == "json":
        try:
            return dict(pl.scan_ndjson(member.path, infer_schema_length=None).collect_schema())
        except pl.exceptions.PolarsError as error:
            raise _explain(member, error) from error
    with member.path.open(encoding="utf-8", newline="") as text:
        try:
            header = next(csv.reader(text, strict=True), [])
        except (csv.Error, UnicodeDecodeError) as error:
            raise member.malformed(f"the header is not valid UTF-8 CSV ({error})", 1) from None
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise member.malformed(f"the header names {', '.join(map(repr, duplicated))} more than once", 1)
    return dict.fromkeys(header, pl.String())


def _check_column_names(member: _Member, schema: SourceSchema, present: Collection[str]) -> None:
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


def _record_count(member: _Member) -> int:
    """The member's records, counted by the Python pass (which raises at the first defect it finds)."""
    return sum(1 for _ in _record_lines(member))


def _line_of_row(member: _Member, row: int) -> int:
    return next(islice(_record_lines(member), row, None))


def _record_lines(member: _Member) -> Iterator[int]:
    """Check each record of the member and yield the line it starts on (the slow path: only to explain a failure).

    The records come in the order polars reads them, so the n-th yielded line is the line of polars' row n.
    """
    with member.path.open("rb") as binary:
        lines = _utf8_lines(member, binary)
        if member.format == "json":
            yield from _ndjson_record_lines(member, lines)
        else:
            yield from _csv_record_lines(member, lines)


def _utf8_lines(member: _Member, binary: Iterable[bytes]) -> Iterator[str]:
    for number, raw in enumerate(binary, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            raise member.malformed("the line is not UTF-8 text", number) from None


def _ndjson_record_lines(member: _Member, lines: Iterator[str]) -> Iterator[int]:
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


def _csv_record_lines(member: _Member, lines: Iterator[str]) -> Iterator[int]:
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


def _scan_text(member: _Member, columns: Collection[str]) -> pl.LazyFrame:
    """Every column as text, as the file says it: the one starting point of JSON and CSV exports.

    The NDJSON scan gets the full set of keys as its schema, so a column that first appears deep inside the file
    is kept (inferring from the first rows would miss it); rows without a key get null there. CSV: polars reads an
    unquoted empty field as null and a quoted one as "".
    """
    if member.format == "json":
        return pl.scan_ndjson(member.path, schema=dict.fromkeys(columns, pl.String))
    return pl.scan_csv(member.path, infer_schema=False)


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


def _typed_rows(text: pl.LazyFrame, schema: SourceSchema, present: Collection[str], extras: list[str]) -> pl.LazyFrame:
    """Documented columns typed, in schema order (all null when absent from the file), then extras as text."""
    documented = (
        _typed(name, dtype, strict=True).alias(name) if name in present else pl.lit(None, dtype).alias(name)
        for name, dtype in schema.columns.items()
    )
    return text.select(*documented, *extras)


def _sink_by_day(
    member: _Member,
    text: pl.LazyFrame,
    typed: pl.LazyFrame,
    staged: Path,
    schema: SourceSchema,
    present: Collection[str],
) -> int:
    """Stream the rows into one Parquet file per day, `staged/export_date=YYYY-MM-DD/part-0.parquet`.

    For CSV, a second scan then counts the commas inside the values (see `_check_record_count`); 0 for NDJSON.
    A failure is explained by the Python pass: the line and value at fault.
    """
    try:
        typed.sink_parquet(
            pl.PartitionBy(
                staged,
                key={_DAY_DIRECTORY: pl.col("_export_date")},
                include_key=False,
                approximate_bytes_per_file=None,  # one file per day, however large
                file_path_provider=_partition_file,
            ),
            compression="zstd",
            mkdir=True,
        )
    except pl.exceptions.PolarsError as error:
        raise _explain(member, error, text, schema, present) from error
    if member.format == "json":
        return 0
    # A query of its own: run beside the sink in one collect_all, it held about 80 MB more per 100 MB of CSV.
    commas = pl.sum_horizontal(pl.col(name).str.count_matches(",", literal=True).sum() for name in present)
    return int(text.select(commas).collect().item())


def _check_record_count(member: _Member, rows: int, columns: int, commas_in_values: int) -> None:
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
    member: _Member,
    error: pl.exceptions.PolarsError,
    text: pl.LazyFrame | None = None,
    schema: SourceSchema | None = None,
    present: Collection[str] = (),
) -> MalformedExport:
    """Why polars failed, named by line: the Python pass raises at the first broken record; otherwise the first
    value that does not parse as its documented type; otherwise polars' own words."""
    _record_count(member)
    if text is not None and schema is not None:
        unparseable = _unparseable_value(member, text, schema, present)
        if unparseable is not None:
            return unparseable
    return member.malformed(f"polars could not read it ({str(error).splitlines()[0]})")


def _unparseable_value(
    member: _Member, text: pl.LazyFrame, schema: SourceSchema, present: Collection[str]
) -> MalformedExport | None:
    """The first value that does not parse as its documented type, with its line."""
    checks = {
        name: pl.col(name).is_not_null() & (pl.col(name) != "") & _typed(name, dtype, strict=False).is_null()
        for name, dtype in schema.columns.items()
        if name in present and dtype != pl.String()
    }
    if not checks:
        return None
    found = text.with_row_index(_ROW_INDEX).filter(pl.any_horizontal(*checks.values())).head(1).collect()
    if found.is_empty():
        return None
    name = next(name for name, check in checks.items() if found.select(check).item())
    value: str = found.item(0, name)
    line = _line_of_row(member, found.item(0, _ROW_INDEX))
    return member.malformed(f"{name} holds {value[:60]!r}, which is not {_EXPECTED_FORM[schema.columns[name]]}", line)


def _partition_file(args: FileProviderArgs) -> str:
    day: date = args.partition_keys.item(0, 0)
    return _day_file(day)


def _day_file(day: date) -> str:
    return f"{_DAY_DIRECTORY}={day.isoformat()}/{_DAY_FILE}"


def _staged_rows(staged: Path, window: ExportWindow) -> dict[date, int]:
    """Rows of each day's staged file, from the files' metadata in one scan (zero for a day without a file)."""
    files = sorted(staged.glob(f"{_DAY_DIRECTORY}=*/{_DAY_FILE}"))
    counts: dict[date, int] = {}
    if files:
        by_file = pl.scan_parquet(files, include_file_paths=_ROW_INDEX).group_by(_ROW_INDEX).len().collect()
        counts = {date.fromisoformat(Path(path).parent.name.split("=")[1]): rows for path, rows in by_file.iter_rows()}
    return {day: counts.get(day, 0) for day in window.dates()}


def _moved_rows(staged: Path, day_column: str, timezone: str) -> dict[date, tuple[int, int]]:
    """Per day, the staged rows `export_day` moved there: (dated outside the window, undated). Two columns of the
    staged Parquet, read in one scan (about 1 % of the parse), so no clamping goes unrecorded."""
    own_day = pl.col(day_column).dt.convert_time_zone(timezone).dt.date()
    counts = (
        pl.scan_parquet(sorted(staged.glob(f"{_DAY_DIRECTORY}=*/{_DAY_FILE}")))
        .group_by("_export_date")
        .agg(clamped=(own_day != pl.col("_export_date")).sum(), undated=pl.col(day_column).is_null().sum())
        .collect()
    )
    return {day: (clamped, undated) for day, clamped, undated in counts.iter_rows()}


def _publish(staged: Path, out_dir: Path, day: date, rows: int, clamped: int, undated: int) -> ParsedDay:
    """Move a day's staged file into out_dir, or remove an older file when the day now has no rows."""
    target = out_dir / _day_file(day)
    if not rows:
        target.unlink(missing_ok=True)
        with suppress(OSError):  # the day's folder too, unless something else lives there
            target.parent.rmdir()
        return ParsedDay(day=day, path=None, rows=0)
    target.parent.mkdir(exist_ok=True)
    (staged / _day_file(day)).replace(target)
    return ParsedDay(day=day, path=target, rows=rows, clamped_rows=clamped, undated_rows=undated)

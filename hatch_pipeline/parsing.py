"""A stored export ZIP → one Parquet file per day, with polars.

Every step streams, so memory stays bounded by the vendor's payload limit rather than growing with copies: the
ZIP member is decompressed to a temp file in chunks; a first pass in plain Python checks its structure record by
record (so a defect is reported with its line number) and finds every column, even one that first appears deep
inside the file; polars then scans the file lazily and sinks it partitioned by day, never collecting a DataFrame.

JSON and CSV exports take one path: both are read as text with blanks as null (the vendor's CSV cannot tell an
empty string from a null), then typed by the same expressions, so the format of an export never changes the table.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
import zipfile
from collections.abc import Collection, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import islice
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
from polars.io.partition import FileProviderArgs

from hatch_pipeline.export_api.windows import DataSource, ExportWindow, OutputFormat
from hatch_pipeline.schemas import LINEAGE_COLUMNS, SCHEMAS, TIMESTAMP, SourceSchema

__all__ = [
    "LINEAGE_COLUMNS",
    "SCHEMAS",
    "MalformedExport",
    "ParsedDay",
    "ParsedExport",
    "SourceSchema",
    "export_day",
    "parse_export",
]

_CHUNK_BYTES: Final = 1 << 20
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
_DAY_DIRECTORY: Final = "export_date"
_DAY_FILE: Final = "part-0.parquet"
_ROW_INDEX: Final = "_row"
_VENDOR_FIX: Final = (
    "The stored ZIP is kept as the vendor sent it: report the file and line to Hatch, "
    "and re-export the window once they have fixed the data."
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


@dataclass(frozen=True)
class ParsedExport:
    """What one export became: every day of the window in order, and the columns of its Parquet files."""

    rows: int
    days: tuple[ParsedDay, ...]
    columns: tuple[str, ...]


@dataclass(frozen=True)
class _Member:
    """The export's one file, decompressed to `path`, and how to name it in errors."""

    zip_path: Path
    name: str
    path: Path
    format: OutputFormat

    def malformed(self, problem: str, line: int | None = None) -> MalformedExport:
        return MalformedExport(self.zip_path, self.name, problem, line)


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
) -> ParsedExport:
    """Write the export's rows to `out_dir/export_date=YYYY-MM-DD/part-0.parquet` (zstd), one file per day.

    Each row lands on one day of the window (see `export_day`), so the days' row counts add up to the file's
    records; a mismatch fails rather than losing rows silently. Every day of the window is settled: its file is
    replaced, or removed when the day has no rows, so parsing the same ZIP again gives the same files. Rows keep
    the order of the file. `source_file` (the gs:// URI of the stored ZIP) and `loaded_at` are passed in so
    runs are reproducible; `date_column` picks another documented timestamp than the source's default.
    """
    schema = SCHEMAS[source]
    day_column = _checked_date_column(schema, date_column)
    _check_timezone(timezone)
    if loaded_at.tzinfo is None:
        raise ValueError("loaded_at has no time zone; pass an aware datetime such as datetime.now(UTC)")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Scratch space inside out_dir, so finished files move into place by rename and a failure leaves nothing.
    with tempfile.TemporaryDirectory(prefix=".parsing-", dir=out_dir) as scratch:
        member = _extract_member(zip_path, source, window, Path(scratch))
        present, rows = _survey(member)
        extras = sorted(present - schema.columns.keys())
        staged = Path(scratch) / "days"
        if rows:
            text = _scan_text(member, sorted(present))
            typed = _typed_rows(text, schema, present, extras).with_columns(
                _export_date=export_day(pl.col(day_column), window, timezone),
                _source_file=pl.lit(source_file, pl.String),
                _loaded_at=pl.lit(loaded_at.astimezone(UTC), TIMESTAMP),
            )
            try:
                _sink_by_day(typed, staged)
            except pl.exceptions.PolarsError as error:
                unparseable = _unparseable_value(member, text, schema, present)
                if unparseable is None:
                    raise
                raise unparseable from error
        staged_rows = {day: _parquet_rows(staged / _day_file(day)) for day in window.dates()}
        if sum(staged_rows.values()) != rows:
            raise member.malformed(
                f"polars read {sum(staged_rows.values())} rows but the file holds {rows} records "
                "(the readers disagree on its quoting or line structure)"
            )
        days = tuple(_publish(staged, out_dir, day, count) for day, count in staged_rows.items())
    return ParsedExport(rows=rows, days=days, columns=(*schema.columns, *extras, *LINEAGE_COLUMNS))


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


def _extract_member(zip_path: Path, source: DataSource, window: ExportWindow, scratch: Path) -> _Member:
    """Decompress the ZIP's one member in chunks, after checking it is the file the contract names."""
    stem = f"{source}_{window.start.isoformat()}_{window.end.isoformat()}"
    expected: dict[str, OutputFormat] = {f"{stem}.json": "json", f"{stem}.csv": "csv"}
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
            if len(names) != 1 or names[0] not in expected:
                found = ", ".join(repr(name) for name in names) or "no member"
                raise MalformedExport(
                    zip_path,
                    None,
                    f"expected exactly one member named {stem}.json or {stem}.csv, found {found}",
                    fix=f"Check that this ZIP is the {source} export for {window}; if it is, report it to Hatch.",
                )
            member = _Member(zip_path, names[0], scratch / names[0], expected[names[0]])
            with archive.open(member.name) as packed, member.path.open("wb") as unpacked:
                shutil.copyfileobj(packed, unpacked, _CHUNK_BYTES)
    except zipfile.BadZipFile as error:
        raise MalformedExport(zip_path, None, f"not a readable ZIP archive ({error})") from None
    return member


def _survey(member: _Member) -> tuple[set[str], int]:
    """One pass over the member: every column name in it, and how many records it holds."""
    columns: set[str] = set()
    rows = sum(1 for _ in _record_lines(member, columns))
    return columns, rows


def _line_of_row(member: _Member, row: int) -> int:
    return next(islice(_record_lines(member, set()), row, None))


def _record_lines(member: _Member, columns: set[str]) -> Iterator[int]:
    """Check each record of the member, add its column names to `columns`, and yield the line it starts on.

    The records come in the order polars reads them, so the n-th yielded line is the line of polars' row n.
    """
    with member.path.open("rb") as binary:
        lines = _utf8_lines(member, binary)
        if member.format == "json":
            yield from _ndjson_record_lines(member, lines, columns)
        else:
            yield from _csv_record_lines(member, lines, columns)


def _utf8_lines(member: _Member, binary: Iterable[bytes]) -> Iterator[str]:
    for number, raw in enumerate(binary, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            raise member.malformed("the line is not UTF-8 text", number) from None


def _ndjson_record_lines(member: _Member, lines: Iterator[str], columns: set[str]) -> Iterator[int]:
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
        columns.update(record)
        yield number


def _csv_record_lines(member: _Member, lines: Iterator[str], columns: set[str]) -> Iterator[int]:
    csv.field_size_limit(max(csv.field_size_limit(), _MAX_FIELD_CHARS))
    reader = csv.reader(lines, strict=True)
    start = 1
    try:
        header = next(reader, None)
        if header is None:
            return
        columns.update(header)
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
    """Every column as text with blanks as null: the one starting point of JSON and CSV exports.

    The NDJSON scan gets the full set of keys as its schema, so a column that first appears deep inside the
    file is kept (inferring from the first rows would miss it); rows without a key get null there.
    """
    if member.format == "json":
        text = pl.scan_ndjson(member.path, schema=dict.fromkeys(columns, pl.String))
    else:
        text = pl.scan_csv(member.path, infer_schema=False)
    return text.with_columns(pl.when(pl.col(name) != "").then(pl.col(name)).alias(name) for name in columns)


def _typed(name: str, dtype: pl.DataType, *, strict: bool) -> pl.Expr:
    """Text → the documented type; `strict` fails on a value that does not parse, otherwise it becomes null."""
    text = pl.col(name)
    if dtype == TIMESTAMP:
        return text.str.to_datetime(_TIMESTAMP_FORMAT, time_unit="us", time_zone="UTC", strict=strict)
    if dtype == pl.Boolean():
        if strict:
            return text.replace_strict(_BOOLEANS, return_dtype=pl.Boolean)
        return text.replace_strict(_BOOLEANS, default=None, return_dtype=pl.Boolean)
    return text.cast(dtype, strict=strict)


def _typed_rows(text: pl.LazyFrame, schema: SourceSchema, present: Collection[str], extras: list[str]) -> pl.LazyFrame:
    """Documented columns typed, in schema order (all null when absent from the file), then extras as text."""
    documented = (
        _typed(name, dtype, strict=True).alias(name) if name in present else pl.lit(None, dtype).alias(name)
        for name, dtype in schema.columns.items()
    )
    return text.select(*documented, *extras)


def _sink_by_day(typed: pl.LazyFrame, staged: Path) -> None:
    """Stream the rows into one Parquet file per day, `staged/export_date=YYYY-MM-DD/part-0.parquet`."""
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


def _unparseable_value(
    member: _Member, text: pl.LazyFrame, schema: SourceSchema, present: set[str]
) -> MalformedExport | None:
    """Explain a failed typed scan: the first value that does not parse as its documented type, with its line."""
    checks = {
        name: pl.col(name).is_not_null() & _typed(name, dtype, strict=False).is_null()
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


def _parquet_rows(path: Path) -> int:
    if not path.exists():
        return 0
    rows: int = pl.scan_parquet(path).select(pl.len()).collect().item()
    return rows


def _publish(staged: Path, out_dir: Path, day: date, rows: int) -> ParsedDay:
    """Move a day's staged file into out_dir, or remove an older file when the day now has no rows."""
    target = out_dir / _day_file(day)
    if not rows:
        target.unlink(missing_ok=True)
        with suppress(OSError):  # the day's folder too, unless something else lives there
            target.parent.rmdir()
        return ParsedDay(day=day, path=None, rows=0)
    target.parent.mkdir(exist_ok=True)
    (staged / _day_file(day)).replace(target)
    return ParsedDay(day=day, path=target, rows=rows)

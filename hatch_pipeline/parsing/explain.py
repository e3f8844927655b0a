"""The slow path: read the member again, record by record in Python, to name the line at fault.

It runs only when polars fails on a part, or when the counts taken while decompressing say polars did not read
every record once. A broken record is named by the line it starts on; otherwise the first value that does not parse
as its documented type, found part by part as the fast path reads them, so polars' row numbers map to lines.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Collection, Iterable, Iterator
from itertools import islice
from typing import Final

import polars as pl

from hatch_pipeline.parsing.member import MalformedExport, Member
from hatch_pipeline.parsing.values import EXPECTED_FORM, read_text, unparseable
from hatch_pipeline.schemas import SourceSchema

__all__ = ["check_record_count", "explain"]

_MAX_FIELD_CHARS: Final = 100_000_000
"""The vendor's payload limit; Python's csv default of 128 KiB per field is too small for long email bodies."""
_ROW_INDEX: Final = "_row"


def check_record_count(member: Member, rows: int, columns: int, commas_in_values: int) -> None:
    """Fail unless polars read every record of the file once, checked from the counts taken while decompressing.

    NDJSON: one record per line. CSV: each of the header and the records holds `columns - 1` separators, and any
    other comma sits inside a value, so a row with missing fields shows as missing commas. When the counts differ
    (blank NDJSON lines do that harmlessly), the Python pass counts the records itself and names any defect.
    Public for the fast path, which calls it once every part is written; it lives here because only the slow pass
    can settle a disagreement.
    """
    if member.format == "json":
        expected = member.line_breaks + (0 if member.ends_with_line_break else 1)
        matches = rows == expected
    else:
        matches = member.commas == (columns - 1) * (rows + 1) + commas_in_values
    if not matches and (records := _record_count(member)) != rows:
        raise member.malformed(
            f"polars read {rows} rows but the file holds {records} records "
            "(the readers disagree on its quoting or line structure)"
        )


def explain(
    member: Member, error: pl.exceptions.PolarsError, schema: SourceSchema, present: Collection[str]
) -> MalformedExport:
    """Why polars failed, named by line: the Python pass raises at the first broken record; otherwise the first
    value that does not parse as its documented type; otherwise polars' own words. Public for the fast path, which
    stops at a polars failure and hands it here with the columns it read as text (`present`)."""
    _record_count(member)
    found = _unparseable_value(member, schema, present)
    if found is not None:
        return found
    return member.malformed(f"polars could not read it ({str(error).splitlines()[0]})")


def _unparseable_value(member: Member, schema: SourceSchema, present: Collection[str]) -> MalformedExport | None:
    """The first value that does not parse as its documented type, with its line (read part by part, as
    the fast path reads them, so the row numbers are polars')."""
    checks = {
        name: unparseable(name, dtype)
        for name, dtype in schema.columns.items()
        if name in present and dtype != pl.String()
    }
    rows = 0
    for part in member.parts() if checks else ():
        text = read_text(member, part, present)
        found = text.with_row_index(_ROW_INDEX, rows).filter(pl.any_horizontal(*checks.values())).head(1)
        rows += text.height
        if found.is_empty():
            continue
        name = next(name for name, check in checks.items() if found.select(check).item())
        value: str = found.item(0, name)
        line = _line_of_row(member, found.item(0, _ROW_INDEX))
        return member.malformed(
            f"{name} holds {value[:60]!r}, which is not {EXPECTED_FORM[schema.columns[name]]}", line
        )
    return None


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

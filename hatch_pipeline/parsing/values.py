"""Typing a part's values: every value is read as text, then each documented column gets its documented type.

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

from collections.abc import Collection, Mapping
from typing import Final

import polars as pl

from hatch_pipeline.parsing.member import MemberFile
from hatch_pipeline.schemas import TIMESTAMP, SourceSchema

__all__ = ["EXPECTED_FORM", "read_text", "typed_rows", "unparseable"]

_TIMESTAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%S%.f%#z"
"""ISO-8601 with a `Z` or a `±hh:mm` offset; the fraction is optional (chrono's `%.f`)."""
_SECONDS_FORMAT: Final = "%Y-%m-%dT%H:%M:%S"
"""Its first 19 characters, which polars parses in native code (see `_utc_timestamp`)."""
_BOOLEANS: Final = {"true": True, "false": False}
EXPECTED_FORM: Final[Mapping[pl.DataType, str]] = {
    TIMESTAMP: "an ISO-8601 timestamp with Z or an offset, like 2026-11-20T23:59:58.123Z",
    pl.Boolean(): "a boolean (true or false)",
    pl.Float64(): "a number",
}
"""What a value of each typed documented column must look like, as the slow path (`explain.py`) names it to the
user; kept beside the rules that parse such values, so the two change together."""


def read_text(file: MemberFile, part: bytes, columns: Collection[str]) -> pl.DataFrame:
    """Every column of a part as text (CSV: the part's header; NDJSON: `columns`).

    Public for the slow path too: it reads the parts as the fast path does, so its row numbers are polars'.
    """
    if file.format == "json":
        return pl.read_ndjson(part, schema=dict.fromkeys(columns, pl.String))
    return pl.read_csv(part, infer_schema=False)


def typed_rows(text: pl.DataFrame, schema: SourceSchema, present: Collection[str], extras: list[str]) -> pl.DataFrame:
    """Documented columns typed, in schema order (all null when absent from the file), then extras as text: what
    the fast path (`export.py`) writes for each part.

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


def unparseable(name: str, dtype: pl.DataType) -> pl.Expr:
    """Whether a row's value of column `name` is written but does not parse as `dtype`: public for the slow path,
    which looks for the first such value to name its line, by the same rule the fast path parses with."""
    return _written(name) & _typed(name, dtype, strict=False).is_null()


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

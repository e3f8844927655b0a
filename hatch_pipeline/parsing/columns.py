"""The columns of an export's file: which it has, with the types polars infers, and whether BigQuery can take them.

The columns come from the CSV header, or from the keys polars infers over the first NDJSON part; when a later NDJSON
part holds another key (`json_keys.py` finds the candidates cheaply), the keys are inferred over every part, each
with the supertype of its types, so a column that first appears deep inside a file is kept. The names are checked
against what BigQuery accepts before any row is written.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection
from typing import Final

import polars as pl

from hatch_pipeline.column_names import column_name_problem
from hatch_pipeline.parsing.member import Member, MemberFile
from hatch_pipeline.schemas import HIVE_KEY, LINEAGE_COLUMNS, SourceSchema

__all__ = ["check_column_names", "columns_of", "inferred_columns", "inferred_keys"]

_NAME_FIX: Final = (
    "Nothing was written and the stored ZIP is kept: report the column to Hatch, and re-export the window once they "
    "have renamed it."
)


def columns_of(file: MemberFile, part: bytes) -> dict[str, pl.DataType]:
    """The columns of the file's first part, in its order, with the type polars infers (CSV: all text).

    NDJSON: the keys polars infers over the whole part. CSV: the header, read with Python's csv module so that
    duplicate names are seen as they are (polars renames them). Public for the fast path, which settles the columns
    from the first part before any later part is written.
    """
    if file.format == "json":
        return inferred_keys(part) if part else {}
    with io.TextIOWrapper(io.BytesIO(part), encoding="utf-8", newline="") as text:
        try:
            header = next(csv.reader(text, strict=True), [])
        except (csv.Error, UnicodeDecodeError) as error:
            raise file.malformed(f"the header is not valid UTF-8 CSV ({error})", 1) from None
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise file.malformed(f"the header names {', '.join(map(repr, duplicated))} more than once", 1)
    return dict.fromkeys(header, pl.String())


def inferred_keys(part: bytes) -> dict[str, pl.DataType]:
    """The keys of an NDJSON part and their types, as polars infers them over every line of it: public for the fast
    path, which asks it whether a part the cheap search flagged really holds a new key."""
    return dict(pl.scan_ndjson(part, infer_schema_length=None).collect_schema())


def inferred_columns(member: Member) -> dict[str, pl.DataType]:
    """The keys of every part, in the order they first appear, each with the supertype of its inferred types: public
    for the fast path, which parses every part again with these once a later part held a new key."""
    columns: dict[str, pl.DataType] = {}
    for part in member.parts():
        for name, dtype in inferred_keys(part).items():
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


def check_column_names(member: MemberFile, schema: SourceSchema, present: Collection[str]) -> None:
    """Refuse, before anything is written, a column BigQuery cannot take or that would clash in the table.

    BigQuery column names are case-insensitive, so names that differ only in case (also from a documented column,
    which the table always has) clash; a vendor column named like a lineage column or the folder key would
    overwrite it. Public for the fast path, which checks the columns the first part settled, and again those of the
    whole file when a later part held a new key.
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

"""What BigQuery takes as a column or table name: plain rules, without the BigQuery client.

Parsing refuses a vendor column that BigQuery would refuse before anything is written, and the SQL in warehouse.py
quotes only names these rules allow; both read them here, so parsing an export never imports Google's clients
(about 0.7 s of a fresh process's start).
"""

from __future__ import annotations

import re
from typing import Final

NAME_PATTERN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")
"""A letter or underscore, then letters, digits and underscores: at most 300 characters."""
RESERVED_COLUMN_PREFIXES: Final = ("_TABLE_", "_FILE_", "_PARTITION", "_ROW_TIMESTAMP", "__ROOT__", "_COLON_")
"""BigQuery refuses column names that start with these, in any case."""


def column_name_problem(name: str) -> str | None:
    """Why BigQuery (or the SQL warehouse.py writes) cannot take `name` as a column, or None when it can.

    Names are also case-insensitive in BigQuery: callers must check that no two names differ only in case.
    """
    if not NAME_PATTERN.fullmatch(name):
        return "column names need a letter or underscore first, then letters, digits and underscores (at most 300)"
    reserved = next((prefix for prefix in RESERVED_COLUMN_PREFIXES if name.upper().startswith(prefix)), None)
    if reserved is not None:
        return f"BigQuery reserves column names starting with {reserved}"
    return None

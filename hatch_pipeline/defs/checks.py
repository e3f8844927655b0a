"""Asset checks: the row counts of every stage must reconcile, so no row disappears silently."""

from __future__ import annotations

from datetime import date
from typing import Final

import dagster as dg

ROWS_MATCH_PARQUET: Final = "rows_match_parquet"


def row_mismatches(expected: dict[date, int], actual: dict[date, int]) -> dict[str, dict[str, int]]:
    """Days whose counts differ, as {day: {"parquet": n, "table": m}}."""
    return {
        day.isoformat(): {"parquet": expected.get(day, 0), "table": actual.get(day, 0)}
        for day in sorted(expected.keys() | actual.keys())
        if expected.get(day, 0) != actual.get(day, 0)
    }


def reconcile_rows(expected: dict[date, int], actual: dict[date, int]) -> dg.AssetCheckResult:
    """The table holds, for each day of the run, exactly the rows the Parquet stage wrote."""
    mismatches = row_mismatches(expected, actual)
    return dg.AssetCheckResult(
        check_name=ROWS_MATCH_PARQUET,
        passed=not mismatches,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "parquet_rows": sum(expected.values()),
            "table_rows": sum(actual.values()),
            "mismatched_days": dg.MetadataValue.json(mismatches),
        },
    )

"""The checks' verdicts as plain functions, on hand-made counts: which day is due, which days fail and why."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from hatch_pipeline.quality import (
    StoredDay,
    column_drift,
    due_day,
    raw_parquet_findings,
    repeated_id_findings,
    summary,
    table_findings,
)
from hatch_pipeline.warehouse import IdCounts

NINE = time(9, 0)
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
D1, D2, D3, D4 = (date(2026, 11, day) for day in (20, 21, 22, 23))


def published_day(
    rows: int, *, parquet: int | None = None, built_from: str | None = "z1", newest: str | None = "z1"
) -> StoredDay:
    """A published day whose Parquet build read `rows` from ZIP `built_from`; `newest` is the newest stored ZIP."""
    return StoredDay(
        newest_raw_zip=newest,
        published=True,
        read_from_raw=rows,
        built_from=built_from,
        lineage_recorded=True,
        parquet_rows=rows if parquet is None else parquet,
    )


@pytest.mark.parametrize(
    ("as_of", "zone", "due"),
    [
        (datetime(2026, 11, 26, 8, 59, tzinfo=UTC), ZoneInfo("UTC"), date(2026, 11, 24)),
        (datetime(2026, 11, 26, 9, 0, tzinfo=UTC), ZoneInfo("UTC"), date(2026, 11, 25)),
        # 09:00 in Los Angeles is 17:00 UTC in winter; at 16:59 UTC yesterday is not due there yet.
        (datetime(2026, 11, 26, 16, 59, tzinfo=UTC), LOS_ANGELES, date(2026, 11, 24)),
        (datetime(2026, 11, 26, 17, 0, tzinfo=UTC), LOS_ANGELES, date(2026, 11, 25)),
        # 01:00 UTC on the 27th is still the 26th in Los Angeles, after its deadline.
        (datetime(2026, 11, 27, 1, 0, tzinfo=UTC), LOS_ANGELES, date(2026, 11, 25)),
        # The morning clocks spring forward, 09:00 is 16:00 UTC.
        (datetime(2027, 3, 14, 16, 0, tzinfo=UTC), LOS_ANGELES, date(2027, 3, 13)),
    ],
)
def test_yesterday_is_due_once_the_deadline_passed_in_the_pipelines_zone(
    as_of: datetime, zone: ZoneInfo, due: date
) -> None:
    assert due_day(as_of, NINE, zone) == due


def test_raw_parquet_findings_name_each_kind_of_problem() -> None:
    stored = {
        D1: published_day(12),
        D2: published_day(12, parquet=5),
        D3: published_day(12, built_from="z1", newest="z2"),
        D4: StoredDay(newest_raw_zip="z4", published=False),
    }

    findings = raw_parquet_findings(stored, [D1, D2, D3, D4, date(2026, 11, 24)])

    assert {day: finding["problem"] for day, finding in findings.items()} == {
        "2026-11-21": "the Parquet file holds another number of rows than were read from the export",
        "2026-11-22": "the Parquet was built from an older export than the newest stored one",
        "2026-11-23": "the stored export was never parsed: no Parquet is published",
        "2026-11-24": "no raw export is stored for this day",
    }
    assert findings["2026-11-21"]["raw"] == 12 and findings["2026-11-21"]["parquet"] == 5


def test_a_manifest_that_does_not_name_its_zip_cannot_be_stale() -> None:
    older = StoredDay(newest_raw_zip="z2", published=True, read_from_raw=3, parquet_rows=3, lineage_recorded=False)

    assert raw_parquet_findings({D1: older}, [D1]) == {}


def test_table_findings_compare_the_table_with_the_stored_parquet_and_show_all_three() -> None:
    stored = {D1: published_day(12), D2: published_day(12, parquet=11)}

    findings = table_findings(stored, {D1: 12, D2: 12, D3: 4}, [D1, D2, D3])

    assert findings == {
        "2026-11-21": {"raw": 12, "parquet": 11, "table": 12},
        "2026-11-22": {"raw": None, "parquet": None, "table": 4},
    }


def test_repeated_ids_count_extra_rows_and_rows_without_an_id() -> None:
    counts = {D1: IdCounts(rows=5, distinct_ids=3, null_ids=1), D2: IdCounts(rows=4, distinct_ids=4, null_ids=0)}

    assert repeated_id_findings(counts) == {
        "2026-11-20": {"rows": 5, "extra_rows_of_repeated_ids": 1, "rows_without_id": 1}
    }


def test_column_drift_names_columns_with_the_days_they_differ_on() -> None:
    documented = ["id", "body"]
    sent = {
        D1: ("id", "body", "score"),
        D2: ("id", "body", "score"),
        D3: ("id", "body"),
        D4: ("id", "score"),
    }
    stored = {d: StoredDay(newest_raw_zip=None, published=True, vendor_columns=cols) for d, cols in sent.items()}
    stored[date(2026, 11, 24)] = StoredDay(newest_raw_zip=None, published=True, vendor_columns=None)  # unknown

    drift = column_drift(stored, documented)

    assert drift.new == {"score": ["2026-11-20..2026-11-21", "2026-11-23..2026-11-23"]}
    assert drift.missing == {"body": ["2026-11-23..2026-11-23"]}


def test_the_summary_shows_the_first_days_and_how_many_more() -> None:
    findings = {f"2026-11-{n:02d}": {"table": n} for n in range(1, 8)}

    assert summary(findings, limit=2) == "2026-11-01 (table 1); 2026-11-02 (table 2); and 5 more"

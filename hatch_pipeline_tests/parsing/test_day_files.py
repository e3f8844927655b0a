"""Rows appended a batch at a time into one Parquet file per day: each day's rows in the order they came, whether
the days arrive one after the other or interleaved (also when a day comes back after its file was finished), with
Parquet's own types."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from hatch_pipeline.parsing.day_files import MANY_DAYS, DayFiles

NOV_20, NOV_21 = date(2026, 11, 20), date(2026, 11, 21)


def file_of(day: date) -> str:
    return f"day={day.isoformat()}/part-0.parquet"


def batch(rows: list[tuple[date, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "day": [day for day, _ in rows],
            "n": [n for _, n in rows],
            "text": [f"row {n}" for _, n in rows],
            "at": [datetime(2026, 11, 20, tzinfo=UTC)] * len(rows),
        },
        schema={"day": pl.Date, "n": pl.Int64, "text": pl.String, "at": pl.Datetime("us", "UTC")},
    )


def test_each_day_keeps_its_rows_in_order_across_batches_sorted_or_interleaved(tmp_path: Path) -> None:
    with DayFiles(tmp_path, "day", file_of) as days:
        days.write(batch([(NOV_20, 1), (NOV_20, 2), (NOV_21, 3)]))  # days one after the other
        days.write(batch([(NOV_21, 4), (NOV_20, 5), (NOV_21, 6), (NOV_20, 7)]))  # interleaved
        days.close()
        rows = dict(days.rows)

    assert rows == {NOV_20: 4, NOV_21: 3}
    assert pl.read_parquet(tmp_path / file_of(NOV_20))["n"].to_list() == [1, 2, 5, 7]
    assert pl.read_parquet(tmp_path / file_of(NOV_21))["n"].to_list() == [3, 4, 6]


def test_the_files_carry_plain_parquet_types(tmp_path: Path) -> None:
    with DayFiles(tmp_path, "day", file_of) as days:
        days.write(batch([(NOV_20, 1)]))

    frame = pl.read_parquet(tmp_path / file_of(NOV_20))
    assert frame.schema == batch([]).schema
    parquet = pq.ParquetFile(tmp_path / file_of(NOV_20))
    assert str(parquet.schema.column(2).logical_type) == "String"
    assert b"ARROW:schema" not in (parquet.metadata.metadata or {})  # readers see Parquet's types, not Arrow's


def test_discard_deletes_what_was_written(tmp_path: Path) -> None:
    with DayFiles(tmp_path, "day", file_of) as days:
        days.write(batch([(NOV_20, 1), (NOV_21, 2)]))
        days.discard()
        days.write(batch([(NOV_21, 3)]))
        days.close()
        assert dict(days.rows) == {NOV_21: 1}

    assert not (tmp_path / file_of(NOV_20)).exists()
    assert pl.read_parquet(tmp_path / file_of(NOV_21))["n"].to_list() == [3]


def test_a_day_that_comes_back_after_a_batch_passed_it_over_keeps_all_its_rows(tmp_path: Path) -> None:
    nov_22 = date(2026, 11, 22)
    with DayFiles(tmp_path, "day", file_of) as days:
        days.write(batch([(NOV_20, 1), (NOV_21, 2)]))
        days.write(batch([(NOV_21, 3), (nov_22, 4)]))  # passes over Nov 20: its file is finished
        days.write(batch([(NOV_20, 5), (nov_22, 6)]))  # Nov 20 after all
        days.write(batch([(nov_22, 7)]))
        days.write(batch([(NOV_20, 8)]))  # and again: from its return on it stays open
        days.close()
        rows = dict(days.rows)

    assert rows == {NOV_20: 3, NOV_21: 2, nov_22: 3}
    assert pl.read_parquet(tmp_path / file_of(NOV_20))["n"].to_list() == [1, 5, 8]
    assert pl.read_parquet(tmp_path / file_of(NOV_21))["n"].to_list() == [2, 3]
    assert pl.read_parquet(tmp_path / file_of(nov_22))["n"].to_list() == [4, 6, 7]
    assert pl.read_parquet(tmp_path / file_of(NOV_20)).schema == batch([]).schema


def test_batches_over_many_days_keep_each_days_rows_in_order(tmp_path: Path) -> None:
    """Batches with rows for more than `MANY_DAYS` days are written on two threads: the same files come out."""
    many = MANY_DAYS + 1
    days_ = [date(2026, 1, 1) + timedelta(days=offset) for offset in range(3 * many)]
    sent: dict[date, list[int]] = {day: [] for day in days_}
    counter = iter(range(1_000_000))

    def rows_for(order: list[date]) -> pl.DataFrame:
        rows = [(day, next(counter)) for day in order]
        for day, n in rows:
            sent[day].append(n)
        return batch(rows)

    later = days_[2 * many - 5 :]
    with DayFiles(tmp_path, "day", file_of) as days:
        days.write(rows_for([day for day in days_[: 2 * many] for _ in range(2)]))  # each day twice in a row
        days.write(rows_for(later + days_[:5] + later))  # later days interleaved; five passed-over days return
        days.write(rows_for(days_))  # every day once more, finished or open
        days.close()
        rows = dict(days.rows)

    assert rows == {day: len(numbers) for day, numbers in sent.items()}
    for day, numbers in sent.items():
        assert pl.read_parquet(tmp_path / file_of(day))["n"].to_list() == numbers

"""Rows into one Parquet file per day, a batch at a time: memory holds one batch, whatever the days or rows.

Why not polars' partitioned sink: it buffers every partition until it holds a large morsel, so with many small
days (180 of them in the longest export) it held the whole export in memory until the end. A pyarrow
`ParquetWriter` per day writes each batch's rows for that day as row groups and keeps only the file open.
An open writer holds about 0.1 MB, so a day that a batch passes over is finished at once: in an export sorted by
time that day is complete, and memory holds the writers of a batch's days, not of every day in the window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
from itertools import cycle
from pathlib import Path
from types import MappingProxyType
from typing import Final

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["MANY_DAYS", "DayFiles"]

_COMPRESSION: Final = "zstd"
MANY_DAYS: Final = 16
"""A batch with rows for more days than this is written on two threads (see `DayFiles.write`); public so that a
test can write batches that take that path whatever the threshold becomes."""


class DayFiles:
    """Appends rows to `directory / file_of(day)`, one file per value of the Date column `day_column`."""

    def __init__(self, directory: Path, day_column: str, file_of: Callable[[date], str]) -> None:
        self._directory = directory
        self._day_column = day_column
        self._file_of = file_of
        self._writers: dict[date, pq.ParquetWriter] = {}
        self._rows: dict[date, int] = {}
        self._finished: set[date] = set()
        """Days whose file was finished early; rows for such a day after all reopen it (see `_open`)."""
        self._scattered: set[date] = set()
        """Days that came back after being finished: kept open until `close` from then on."""
        # pyarrow encodes without the GIL: the rows are written on threads of their own, beside whatever the
        # caller does next (the next batch waits for this one, so each day's rows stay in order).
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="hatch-day-files")
        self._helper = ThreadPoolExecutor(1, thread_name_prefix="hatch-day-files-helper")
        self._writing: list[Future[None]] = []

    def __enter__(self) -> DayFiles:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
        self._pool.shutdown()
        self._helper.shutdown()

    @property
    def rows(self) -> Mapping[date, int]:
        """Rows written so far, per day that has any."""
        return MappingProxyType(self._rows)

    def write(self, rows: pl.DataFrame) -> None:
        """Append `rows` to their days' files, keeping their order within each day; returns while they are written
        (a failure to write shows at the next call, or at `close`).

        A batch touches each day once, so its days can be written side by side. When its rows span many days, each
        day's share is small and the files' own cost is what takes the time (about a millisecond to create, write
        and close one here: a compressor per column, the file, its footer): the days are then shared between two
        threads. When they span few, each share is large and one thread keeps the memory of one write in flight;
        a second gained nothing there and held some 35 MB more per 100 MB export.
        """
        self._wait()
        batch = list(self._by_day(rows))
        passed_over = self._writers.keys() - {day for day, _ in batch} - self._scattered
        pools = cycle([self._pool, self._helper] if len(batch) > MANY_DAYS else [self._pool])
        self._writing.extend(next(pools).submit(self._finish, day) for day in sorted(passed_over))
        for day, day_rows in batch:
            # String views hand polars' buffers to pyarrow without a copy; Parquet stores them as plain strings.
            table = day_rows.to_arrow(compat_level=pl.CompatLevel.newest())
            self._writing.append(next(pools).submit(self._append, day, table))
            self._rows[day] = self._rows.get(day, 0) + day_rows.height

    def _append(self, day: date, table: pa.Table) -> None:
        """Write a day's rows, opening its file first if need be (on the pool too: creating a file can take a
        millisecond on a busy file system, which would hold up the caller a hundred times over)."""
        writer = self._writers.get(day) or self._open(day, table.schema)
        writer.write_table(table)

    def _open(self, day: date, schema: pa.Schema) -> pq.ParquetWriter:
        """A new writer for the day; a day finished early is rewritten with the rows it already holds first (a
        Parquet file cannot be appended to), once: it then stays open, so an export whose days are interleaved
        rewrites each day at most once."""
        path = self._directory / self._file_of(day)
        written = None
        if day in self._finished:
            written = pq.read_table(path, schema=schema)
            self._finished.discard(day)
            self._scattered.add(day)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        writer = pq.ParquetWriter(
            str(path),
            schema,
            compression=_COMPRESSION,
            # Dictionaries cost a third of the writing time and saved nothing next to zstd (the files of a
            # 100 MB export came out 2% smaller without them).
            use_dictionary=False,
            # Minimum and maximum per column chunk, for readers that skip row groups; not of text, where
            # comparing every long body costs much and no one filters on the range.
            write_statistics=[field.name for field in schema if not _is_text(field.type)],
            # Without the Arrow schema the file says only what Parquet says (string, not string view).
            store_schema=False,
        )
        if written is not None:
            writer.write_table(written)
        self._writers[day] = writer
        return writer

    def _finish(self, day: date) -> None:
        self._writers.pop(day).close()
        self._finished.add(day)

    def _wait(self) -> None:
        writing, self._writing = self._writing, []
        for write in writing:
            write.result()

    def _by_day(self, rows: pl.DataFrame) -> Iterator[tuple[date, pl.DataFrame]]:
        """The rows of each day, in order: slices (no copy) when each day's rows are together, as in an export
        sorted by time; otherwise gathered per day."""
        runs = rows.select(pl.col(self._day_column).rle()).unnest(self._day_column)
        if not runs.get_column("value").is_unique().all():
            for (day,), day_rows in rows.partition_by(self._day_column, as_dict=True, maintain_order=True).items():
                yield day, day_rows
            return
        offset = 0
        for length, day in runs.iter_rows():
            yield day, rows.slice(offset, length)
            offset += length

    def close(self) -> None:
        """Finish every file (a Parquet file is readable only once its footer is written)."""
        self._wait()
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()
        self._finished.clear()

    def discard(self) -> None:
        """Close and delete every file written so far, to write the days again from the start."""
        self.close()  # files are opened on the pool: only once it is done are they all known
        for day in self._rows:
            (self._directory / self._file_of(day)).unlink()
        self._rows = {}
        self._scattered.clear()


def _is_text(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype))

"""The Parquet stage: the stored ZIPs that hold a range, parsed into one Parquet file per day and published by
one manifest."""

from __future__ import annotations

import secrets
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from hatch_pipeline.contract import DataSource, ExportWindow, contiguous_windows
from hatch_pipeline.parsing.export import ParsedDay, parse_export
from hatch_pipeline.stages.common import MissingUpstream, lost_days
from hatch_pipeline.storage.keys import parquet_file_key, raw_manifests_prefix, stamp
from hatch_pipeline.storage.manifests import (
    DayRecord,
    Held,
    delete_orphans,
    newest_raw_exports,
    publish_parquet,
    published_records,
)
from hatch_pipeline.storage.store import PARALLEL_CALLS, ObjectStore

_PARQUET_TYPE: Final = "application/vnd.apache.parquet"
ORPHAN_GRACE: Final = timedelta(hours=6)
"""How old an unnamed Parquet file must be before a build deletes it as an orphan: far longer than a build takes,
so the files of a build still running beside this one, not yet named by its manifest, are left alone."""
SHRINK_LIMIT: Final = 0.5
"""A day's newer export is "far smaller" when it holds fewer than this share of the rows landed for the day (none,
as a 204, always is): the Parquet build then keeps the landed rows unless told to accept the shrink."""


@dataclass(frozen=True)
class ParquetBuild:
    days: dict[date, DayRecord]
    """Each day's record in the manifest, in date order."""
    columns: tuple[str, ...]
    """Union of the columns of the range's files, in the order the parser writes them."""
    raw_files: tuple[str, ...]
    """gs:// URIs of the ZIPs read."""
    raw_rows: int
    """Records in those ZIPs (for days outside the range too, when a ZIP spans more than the range)."""
    text_columns: dict[str, str]
    """Vendor-added columns that held non-text JSON values (name -> the type polars saw), stored as text."""
    manifest: str
    """gs:// URI of the manifest that published the range."""
    lost: tuple[date, ...]
    """Days with no stored export that the vendor no longer serves: published as lost, without rows or file."""
    orphans_deleted: tuple[str, ...]
    """Keys of files under the range's days that no manifest named (left by a build killed before its manifest)."""

    @property
    def rows_by_day(self) -> dict[date, int]:
        """Rows per day written, lost days left out (they have no file)."""
        return {day: record.rows for day, record in self.days.items() if not record.lost}

    @property
    def held(self) -> dict[date, dict[str, Any]]:
        """Days whose newer export was far smaller than what was landed, so the landed rows were kept: per day the
        rows kept (`landed_rows`), and the declined export's rows and ZIP (`refetched_rows`, `refetched_zip`)."""
        return {
            day: {
                "landed_rows": record.rows,
                "refetched_rows": record.held.refetched_rows,
                "refetched_zip": record.held.refetched_zip,
            }
            for day, record in self.days.items()
            if record.held is not None
        }


def build_parquet(
    source: DataSource,
    days: ExportWindow,
    *,
    store: ObjectStore,
    timezone: str,
    loaded_at: datetime,
    today: date,
    date_column: str | None = None,
    orphan_grace: timedelta = ORPHAN_GRACE,
    accept_shrink: bool = False,
) -> ParquetBuild:
    """Parse the stored ZIPs that hold the range into one Parquet file per day (none for a day without rows).

    The files are uploaded in parallel under names unique to this build, then one manifest names them all: that
    write is what makes the range's new days visible, so a build that fails or is killed half-way publishes
    nothing. Files the manifest supersedes are deleted afterwards, and so are files under the range's days that no
    manifest names once they are older than `orphan_grace`. Days that can never be landed (`lost_days`, as of
    `today`) are published as lost, so the BigQuery stage leaves them alone.

    A day whose newest export holds far fewer rows than the build that published it read (`SHRINK_LIMIT`: a refetch
    answered 204 while the vendor refreshed, say) keeps its published file and rows, noting the declined export
    under `held`, so nothing downstream empties a landed day; `accept_shrink` publishes the smaller export instead.
    """
    wanted = list(days.dates())
    newest = newest_raw_exports(store, source, wanted)
    lost = lost_days(days, newest, today)
    missing = [day for day in wanted if day not in newest and day not in lost]
    if missing:
        raise MissingUpstream(
            f"hatch/raw/{source} has no stored export for {', '.join(str(w) for w in contiguous_windows(missing))} "
            f"(no manifest under {store.uri(raw_manifests_prefix(source))}); materialize hatch/raw/{source} for "
            "those days first"
        )
    landed = {} if accept_shrink else published_records(store, source, wanted)
    by_zip: dict[tuple[str | None, date, date], list[date]] = defaultdict(list)
    for day, export in newest.items():
        by_zip[(export.zip, export.window.start, export.window.end)].append(day)

    token = f"{stamp(loaded_at)}-{secrets.token_hex(4)}"
    published = {day: DayRecord(file=None, rows=0, lost=True) for day in lost}
    columns: dict[str, None] = {}
    text_columns: dict[str, str] = {}
    raw_rows = 0
    raw_files: list[str] = []
    uploads: list[Future[None]] = []
    # The pool is left (every upload finished) before the folder holding the files is removed.
    with tempfile.TemporaryDirectory(prefix="hatch-parquet-") as workdir, ThreadPoolExecutor(PARALLEL_CALLS) as pool:
        for index, ((key, start, end), wanted) in enumerate(sorted(by_zip.items(), key=lambda item: item[1][0])):
            if key is None:  # the vendor answered 204: these days have no rows
                for day in wanted:
                    published[day] = _kept_if_shrunk(landed.get(day), None, 0) or DayRecord(file=None, rows=0)
                continue
            # Keep the stored name, so a parse error names the object a user can find in the bucket.
            (Path(workdir) / str(index)).mkdir()
            zip_path = store.download(key, Path(workdir) / str(index) / key.rsplit("/", 1)[-1])
            parsed = parse_export(
                zip_path,
                source=source,
                window=ExportWindow(start, end),
                out_dir=Path(workdir) / f"parsed-{index}",
                timezone=timezone,
                source_file=store.uri(key),
                loaded_at=loaded_at,
                date_column=date_column,
            )
            raw_files.append(store.uri(key))
            raw_rows += parsed.rows
            columns |= dict.fromkeys(parsed.columns)
            text_columns |= parsed.text_columns
            for parsed_day in parsed.days:
                if parsed_day.day not in wanted:
                    continue
                kept = _kept_if_shrunk(landed.get(parsed_day.day), key, parsed_day.rows)
                if kept is not None:
                    published[parsed_day.day] = kept
                    continue
                file_key = None
                if parsed_day.path is not None:
                    file_key = parquet_file_key(source, parsed_day.day, token)
                    uploads.append(pool.submit(store.put_file, file_key, parsed_day.path, _PARQUET_TYPE))
                published[parsed_day.day] = _day_record(
                    file_key, key, parsed_day, parsed.columns, parsed.vendor_columns
                )
            zip_path.unlink()
        for upload in uploads:
            upload.result()  # the first failed upload fails the build before anything is published
    manifest_key = publish_parquet(store, source, days, token, published)
    orphans = delete_orphans(store, source, days, {record.file for record in published.values()}, orphan_grace)
    return ParquetBuild(
        days=dict(sorted(published.items())),
        columns=tuple(columns),
        raw_files=tuple(raw_files),
        raw_rows=raw_rows,
        text_columns=text_columns,
        manifest=store.uri(manifest_key),
        lost=tuple(lost),
        orphans_deleted=orphans,
    )


def _kept_if_shrunk(landed: DayRecord | None, raw_zip: str | None, rows: int) -> DayRecord | None:
    """The landed record of a day, noting the declined export under `held`, when the `rows` the export (`raw_zip`,
    None for a 204) holds for the day are far fewer (see SHRINK_LIMIT); None when the export may replace it."""
    if landed is None or landed.lost or rows >= SHRINK_LIMIT * landed.rows:
        return None
    return replace(landed, held=Held(refetched_rows=rows, refetched_zip=raw_zip))


def _day_record(
    file_key: str | None,
    raw_zip: str | None,
    parsed: ParsedDay,
    columns: Sequence[str],
    vendor_columns: Sequence[str] | None = None,
) -> DayRecord:
    """A day's entry in the Parquet manifest: what one export's parse wrote for it."""
    return DayRecord(
        file=file_key,
        rows=parsed.rows,
        columns=tuple(columns) if parsed.rows else (),
        raw_zip=raw_zip,
        vendor_columns=None if vendor_columns is None else tuple(vendor_columns),
        clamped_rows=parsed.clamped_rows,
        undated_rows=parsed.undated_rows,
    )

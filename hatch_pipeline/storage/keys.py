"""What lives where in the bucket: every object's name, relative to `gs://BUCKET/PREFIX/`.

  raw/S/S_A_B-<sha256[:16]>.zip        a vendor ZIP exactly as received; the name carries its hash, so a stored ZIP
                                       is never replaced by different bytes (a re-export that differs gets a new name)
  manifests/raw/S/<stamp>_A_B.json    one manifest per export of days A..B: which ZIP holds them (or that the
                                       vendor answered 204). The newest manifest covering a day wins, so the
                                       names alone (one listing) tell which days are stored and since when
  parquet/S/export_date=YYYY-MM-DD/part-<token>.parquet
                                       that day's rows as one Parquet build wrote them (nothing but Parquet lives
                                       under parquet/S/, so an external table over it reads only data)
  manifests/parquet/S/<token>_A_B.json
                                       what one Parquet build published for days A..B: each day's file, rows and
                                       columns, and what the checks reconcile it with: the raw ZIP it was read from,
                                       the columns the vendor sent, the rows moved into the export's window. Written
                                       after the files, so it is what makes them visible; for each day the newest
                                       manifest (by its token, which starts with a stamp and so sorts by time) is
                                       the truth

A stamp is a UTC time to the microsecond (`STAMP_FORMAT`); a build's token is its stamp and a random suffix.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Final

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.schemas import HIVE_KEY

STAMP_FORMAT: Final = "%Y%m%dT%H%M%S%fZ"
"""How a manifest's name says when it was written: fixed width, so names sort by time. Public for manifests.py,
which reads the time back."""
_DAY: Final = r"\d{4}-\d{2}-\d{2}"
MANIFEST_NAME: Final = re.compile(
    rf"(?P<token>\d{{8}}T\d{{12}}Z(?:-[0-9a-f]+)?)_(?P<start>{_DAY})_(?P<end>{_DAY})\.json"
)
"""A manifest's file name, raw or Parquet: `<token>_<first day>_<last day>.json`, where the token is a stamp (raw)
or a stamp, a dash and a random suffix (a Parquet build). Public for manifests.py, which reads names back."""


def stamp(at: datetime) -> str:
    """`at` as a manifest's name writes it (the first part of a Parquet build's token)."""
    return at.astimezone(UTC).strftime(STAMP_FORMAT)


def raw_zip_key(source: str, archive_stem: str, sha256: str) -> str:
    return f"raw/{source}/{archive_stem}-{sha256[:16]}.zip"


def raw_manifests_prefix(source: str) -> str:
    return f"manifests/raw/{source}/"


def parquet_manifests_prefix(source: str) -> str:
    return f"manifests/parquet/{source}/"


def manifest_key(prefix: str, token: str, window: ExportWindow) -> str:
    """A manifest of either kind under `prefix`: names sort by `token`, so among manifests covering a day the newest
    is the last."""
    return f"{prefix}{token}_{window.start.isoformat()}_{window.end.isoformat()}.json"


def parquet_prefix(source: str) -> str:
    """The folder whose `export_date=YYYY-MM-DD/` subfolders hold a source's Parquet (hive layout)."""
    return f"parquet/{source}/"


def parquet_day_prefix(source: str, day: date) -> str:
    """The folder of one day's Parquet files; the folders of a range of days sort together."""
    return f"{parquet_prefix(source)}{HIVE_KEY}={day.isoformat()}/"


def parquet_file_key(source: str, day: date, token: str) -> str:
    """A day's file as one build wrote it: `token` is unique to the build, so a build never overwrites a file that
    a published manifest names (a build killed half-way leaves only files nobody reads, until a later build of
    those days deletes them)."""
    return f"{parquet_day_prefix(source, day)}part-{token}.parquet"

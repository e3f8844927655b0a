"""The object store: raw ZIPs, per-day Parquet and the small JSON pointers between them, in one GCS bucket.

Layout under `gs://BUCKET/PREFIX/`:
  raw/S/S_A_B-<sha256[:16]>.zip        a vendor ZIP exactly as received; the name carries its hash, so a stored ZIP
                                       is never replaced by different bytes (a re-export that differs gets a new name)
  manifests/raw/S/<stamp>_A_B.json    one manifest per export of days A..B: which ZIP holds them (or that the
                                       vendor answered 204). The newest manifest covering a day wins, so the
                                       names alone (one listing) tell which days are stored and since when
  parquet/S/export_date=YYYY-MM-DD/part-<token>.parquet
                                       that day's rows as one Parquet build wrote them (nothing but Parquet lives
                                       under parquet/S/, so an external table over it reads only data)
  manifests/parquet/S/<stamp>_<A>_<B>.json
                                       what one Parquet build published for days A..B: each day's file, rows and
                                       columns, and what the checks reconcile it with: the raw ZIP it was read from,
                                       the columns the vendor sent, the rows moved into the export's window. Written
                                       after the files, so it is what makes them visible; for each day the newest
                                       manifest (by stamp, which sorts by time) is the truth
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any, Final

from google.api_core.exceptions import NotFound, PreconditionFailed
from google.cloud import storage

from hatch_pipeline.contract import ExportWindow

_READ_CHUNK_BYTES: Final = 64 * 1024
"""Bytes per ranged download of `ObjectStore.reader`: a Parquet footer fits in one or two."""


class ObjectStore:
    """Keys relative to `gs://bucket/prefix`, over an official storage client (real GCS or an emulator)."""

    def __init__(self, client: storage.Client, bucket: str, prefix: str) -> None:
        self._bucket = client.bucket(bucket)
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")

    def __repr__(self) -> str:
        return f"ObjectStore({self.uri('')!r})"

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(key)}"

    def put_file_once(self, key: str, path: Path, content_type: str) -> bool:
        """Create `key` from `path` unless it exists; True when written. Keys that can exist only with the same
        bytes (content-addressed) make "exists" mean "already stored". The generation precondition makes two
        writers racing on real GCS safe; emulators that ignore it are covered by the existence check."""
        blob = self._bucket.blob(self._name(key))
        if blob.exists():
            return False
        try:
            blob.upload_from_filename(str(path), content_type=content_type, if_generation_match=0)
        except PreconditionFailed:
            return False
        return True

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        self._bucket.blob(self._name(key)).upload_from_filename(str(path), content_type=content_type)

    def download(self, key: str, destination: Path) -> Path:
        try:
            self._bucket.blob(self._name(key)).download_to_filename(str(destination))
        except NotFound:
            destination.unlink(missing_ok=True)
            raise FileNotFoundError(f"{self.uri(key)} does not exist") from None
        return destination

    @contextlib.contextmanager
    def reader(self, key: str) -> Iterator[IO[bytes]]:
        """A seekable file object over `key` that downloads only the ranges read, in small requests: reading a
        Parquet footer costs a few kilobytes, not the file. FileNotFoundError when `key` does not exist."""
        try:
            with self._bucket.blob(self._name(key)).open("rb", chunk_size=_READ_CHUNK_BYTES) as reader:
                yield reader
        except NotFound:
            raise FileNotFoundError(f"{self.uri(key)} does not exist") from None

    def delete(self, key: str) -> None:
        with contextlib.suppress(NotFound):
            self._bucket.blob(self._name(key)).delete()

    def put_json(self, key: str, document: dict[str, Any]) -> None:
        self._bucket.blob(self._name(key)).upload_from_string(
            json.dumps(document, indent=1, sort_keys=True), content_type="application/json"
        )

    def list(self, prefix: str) -> list[str]:
        """The keys under `prefix`, sorted (one call per 1,000 keys)."""
        start = len(self._name(""))
        return sorted(blob.name[start:] for blob in self._bucket.list_blobs(prefix=self._name(prefix)))

    def list_created(self, prefix: str, start: str, end: str) -> tuple[tuple[str, datetime], ...]:
        """The keys under `prefix` from `start` (included) to `end` (excluded), sorted, with the time each object
        was created (one call per 1,000 keys)."""
        skip = len(self._name(""))
        blobs = self._bucket.list_blobs(
            prefix=self._name(prefix), start_offset=self._name(start), end_offset=self._name(end)
        )
        return tuple(sorted((blob.name[skip:], blob.time_created) for blob in blobs))

    def get_json(self, key: str) -> dict[str, Any] | None:
        try:
            data = self._bucket.blob(self._name(key)).download_as_bytes()
        except NotFound:
            return None
        document: dict[str, Any] = json.loads(data)
        return document

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key


def raw_zip_key(source: str, archive_stem: str, sha256: str) -> str:
    return f"raw/{source}/{archive_stem}-{sha256[:16]}.zip"


_STAMP: Final = "%Y%m%dT%H%M%S%fZ"
_DAY: Final = r"\d{4}-\d{2}-\d{2}"
_MANIFEST_NAME: Final = re.compile(rf"(?P<stamp>\d{{8}}T\d{{12}}Z)_(?P<start>{_DAY})_(?P<end>{_DAY})\.json")


@dataclass(frozen=True, order=True)
class RawManifest:
    """One export as its manifest's name tells it: when it was stored, and which days it holds."""

    exported_at: datetime
    window: ExportWindow
    key: str


def raw_manifests_prefix(source: str) -> str:
    return f"manifests/raw/{source}/"


def raw_manifest_key(source: str, window: ExportWindow, exported_at: datetime) -> str:
    """Names sort by time, so among manifests covering a day the newest is the last."""
    stamp = exported_at.astimezone(UTC).strftime(_STAMP)
    return f"{raw_manifests_prefix(source)}{stamp}_{window.start.isoformat()}_{window.end.isoformat()}.json"


def parse_raw_manifest_key(key: str) -> RawManifest | None:
    """The manifest a key names, or None for anything else under the prefix."""
    match = _MANIFEST_NAME.fullmatch(key.rsplit("/", 1)[-1])
    if match is None:
        return None
    return RawManifest(
        exported_at=datetime.strptime(match["stamp"], _STAMP).replace(tzinfo=UTC),
        window=ExportWindow(date.fromisoformat(match["start"]), date.fromisoformat(match["end"])),
        key=key,
    )


def newest_manifests(manifests: list[RawManifest], days: list[date]) -> dict[date, RawManifest]:
    """For each of `days` that some manifest covers, the newest such manifest."""
    newest: dict[date, RawManifest] = {}
    for manifest in sorted(manifests):
        for day in manifest.window.dates():
            newest[day] = manifest
    wanted = set(days)
    return {day: manifest for day, manifest in sorted(newest.items()) if day in wanted}


def parquet_prefix(source: str) -> str:
    """The folder whose `export_date=YYYY-MM-DD/` subfolders hold a source's Parquet (hive layout)."""
    return f"parquet/{source}/"


def parquet_day_prefix(source: str, day: date) -> str:
    """The folder of one day's Parquet files; the folders of a range of days sort together."""
    return f"{parquet_prefix(source)}export_date={day.isoformat()}/"


def parquet_file_key(source: str, day: date, token: str) -> str:
    """A day's file as one build wrote it: `token` is unique to the build, so a build never overwrites a file that
    a published manifest names (a build killed half-way leaves only files nobody reads, until a later build of
    those days deletes them)."""
    return f"{parquet_day_prefix(source, day)}part-{token}.parquet"


def parquet_manifest_prefix(source: str) -> str:
    return f"manifests/parquet/{source}/"


def parquet_manifest_key(source: str, stamp: str, start: date, end: date) -> str:
    return f"{parquet_manifest_prefix(source)}{stamp}_{start.isoformat()}_{end.isoformat()}.json"

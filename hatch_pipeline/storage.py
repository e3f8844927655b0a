"""The object store: raw ZIPs, per-day Parquet and the small JSON pointers between them, in one GCS bucket.

Layout under `gs://BUCKET/PREFIX/`:
  raw/S/S_A_B-<sha256[:16]>.zip        a vendor ZIP exactly as received; the name carries its hash, so a stored ZIP
                                       is never replaced by different bytes (a re-export that differs gets a new name)
  raw/S/days/YYYY-MM-DD.json           which stored ZIP holds that day (or that the vendor answered 204)
  parquet/S/export_date=YYYY-MM-DD/part-<token>.parquet
                                       that day's rows as one Parquet build wrote them (nothing but Parquet lives
                                       under parquet/S/, so an external table over it reads only data)
  manifests/parquet/S/<stamp>_<A>_<B>.json
                                       what one Parquet build published for days A..B: each day's file, rows and
                                       columns. Written after the files, so it is what makes them visible; for each
                                       day the newest manifest (by stamp, which sorts by time) is the truth
"""

from __future__ import annotations

import contextlib
import json
from datetime import date
from pathlib import Path
from typing import Any

from google.api_core.exceptions import NotFound, PreconditionFailed
from google.cloud import storage


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


def raw_day_key(source: str, day: date) -> str:
    return f"raw/{source}/days/{day.isoformat()}.json"


def parquet_prefix(source: str) -> str:
    """The folder whose `export_date=YYYY-MM-DD/` subfolders hold a source's Parquet (hive layout)."""
    return f"parquet/{source}/"


def parquet_file_key(source: str, day: date, token: str) -> str:
    """A day's file as one build wrote it: `token` is unique to the build, so a build never overwrites a file that
    a published manifest names (a build killed half-way leaves only files nobody reads)."""
    return f"{parquet_prefix(source)}export_date={day.isoformat()}/part-{token}.parquet"


def parquet_manifest_prefix(source: str) -> str:
    return f"manifests/parquet/{source}/"


def parquet_manifest_key(source: str, stamp: str, start: date, end: date) -> str:
    return f"{parquet_manifest_prefix(source)}{stamp}_{start.isoformat()}_{end.isoformat()}.json"

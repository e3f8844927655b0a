"""The object store: keys relative to `gs://BUCKET/PREFIX/` (see keys.py for what lives where), and a few calls to
it in flight at once where a stage uploads, reads or deletes many objects."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final, TypeVar

from google.api_core.exceptions import NotFound, PreconditionFailed
from google.cloud import storage

_READ_CHUNK_BYTES: Final = 64 * 1024
"""Bytes per ranged download of `ObjectStore.reader`: a Parquet footer fits in one or two."""
PARALLEL_CALLS: Final = 8
"""Object-store calls in flight at once when a stage uploads, reads or deletes many objects. Public for the Parquet
stage, whose uploads share a pool with its parsing."""
_T = TypeVar("_T")


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


def in_parallel(call: Callable[[Any], _T], items: Sequence[Any]) -> Iterator[_T]:
    """`call` over `items` with a few object-store calls in flight, results in order."""
    if len(items) <= 1:
        return map(call, items)
    with ThreadPoolExecutor(PARALLEL_CALLS) as pool:
        return iter(list(pool.map(call, items)))

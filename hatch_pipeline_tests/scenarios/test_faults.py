"""Fault injection through the whole pipeline: the stored export ZIP is replaced by a broken or unusual one, then
the Parquet and BigQuery steps run as a user runs them (Dagster, sandbox, GCS and BigQuery emulators).

Every case checks what a user would: no row lost or duplicated in the table, a failure that names the stored file
(and the line, where a line is at fault), the raw ZIP still stored, and the API key in no log, event, metadata
value or stored object. One pipeline serves every case, so the suite costs one landing and two steps per case.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from google.cloud.storage import Client as StorageClient

from hatch_pipeline.contract import DataSource, ExportWindow
from hatch_pipeline.defs.resources import HatchStorageResource
from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY
from hatch_pipeline.stages.bigquery import published_days
from hatch_pipeline.stages.parquet import ParquetBuild, build_parquet
from hatch_pipeline.storage.keys import parquet_prefix
from hatch_pipeline.storage.store import ObjectStore
from hatch_pipeline_tests.export_api.test_client import zip_of
from hatch_pipeline_tests.support.pipeline_fixtures import ROWS_PER_DAY, YESTERDAY, Pipeline, keys_of, without_load_time

SOURCE: DataSource = "conversation_items"
BOM = "\ufeff".encode()


def declaring(archive: bytes, field: str, value: int) -> bytes:
    """The ZIP with a field of its one member's central directory entry changed: the uncompressed size (how a zip
    bomb looks) or the CRC-32 (how corrupt data looks)."""
    patched = bytearray(archive)
    offset = {"crc32": 16, "size": 24}[field]
    struct.pack_into("<I", patched, archive.rindex(b"PK\x01\x02") + offset, value)
    return bytes(patched)


def with_broken_line(data: bytes, line: int) -> bytes:
    lines = data.splitlines(keepends=True)
    lines[line - 1] = lines[line - 1][:40] + b"\n"
    return b"".join(lines)


def as_csv(data: bytes) -> bytes:
    """The NDJSON rows as RFC 4180 CSV (bodies hold quotes, commas and line breaks), after a byte-order mark."""
    rows = [json.loads(line) for line in data.splitlines()]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return BOM + buffer.getvalue().encode()


def with_rank_changing_type(data: bytes) -> bytes:
    rows = [json.loads(line) for line in data.splitlines()]
    for index, row in enumerate(rows):
        row["rank"] = index if index % 2 else f"#{index}"
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[str, bytes], bytes]
    """(member name, member bytes of the good export) -> the bytes stored in place of the ZIP."""
    error: tuple[str, ...] = ()
    """Parts of the failure message; none means the export is usable and every row must load."""


CASES = (
    # Usable exports first: each loads in full. Then the broken ones: each fails and changes nothing.
    Case("CSV: newlines, quotes, BOM", lambda name, data: zip_of((name.replace(".json", ".csv"), as_csv(data)))),
    Case("a column changing type", lambda name, data: zip_of((name, with_rank_changing_type(data)))),
    Case("two members", lambda name, data: zip_of((name, data), ("notes.txt", b"x")), ("found '", "'notes.txt'")),
    Case("wrong member name", lambda _, data: zip_of(("export.json", data)), ("expected exactly one member",)),
    Case("path traversal", lambda name, data: zip_of((f"../../{name}", data)), ("found '../../",)),
    Case("zip bomb", lambda name, data: declaring(zip_of((name, data)), "size", 4_000_000_000), ("zip bomb",)),
    Case("corrupt member", lambda name, data: declaring(zip_of((name, data)), "crc32", 1), ("bad CRC-32",)),
    Case("truncated ZIP", lambda name, data: zip_of((name, data))[:-200], ("not a readable ZIP archive",)),
    Case("malformed JSON line", lambda name, data: zip_of((name, with_broken_line(data, 3))), ("line 3", "JSON")),
)


def test_every_fault_fails_clearly_and_loses_nothing(
    pipeline: Pipeline, gcs_client: StorageClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keys = keys_of(sources=[SOURCE])
    results = [pipeline.materialize(YESTERDAY, YESTERDAY, keys)]
    [stored] = [
        blob
        for blob in gcs_client.list_blobs(pipeline.bucket, prefix=f"hatch/raw/{SOURCE}/")
        if blob.name.endswith(".zip")
    ]
    with zipfile.ZipFile(io.BytesIO(stored.download_as_bytes())) as archive:
        [member] = archive.namelist()
        good = archive.read(member)
    loaded = pipeline.table(SOURCE)

    for case in CASES:
        faulty = case.build(member, good)
        stored.upload_from_string(faulty)
        # A broken export stops at the Parquet step (Dagster skips the load after it); a usable one loads.
        steps = keys[1:2] if case.error else keys[1:]
        result = pipeline.materialize(YESTERDAY, YESTERDAY, steps, raise_on_error=False)
        results.append(result)
        if case.error:
            failures = [str(event.step_failure_data.error) for event in result.all_events if event.is_step_failure]
            assert len(failures) == 1, case.name
            assert stored.name.rsplit("/", 1)[-1] in failures[0], case.name
            assert all(part in failures[0] for part in case.error), (case.name, failures[0])
        else:
            assert result.success, case.name
            table = pipeline.table(SOURCE)
            assert table.height == ROWS_PER_DAY, case.name
            assert table["id"].sort().equals(loaded["id"].sort()), case.name
            loaded = table
        assert stored.download_as_bytes() == faulty, f"{case.name}: the stored ZIP must stay as it was"

    # After the failures, loading again from what the Parquet step published gives the last good table: no failed
    # parse published anything.
    results.append(pipeline.materialize(YESTERDAY, YESTERDAY, keys[2:]))
    assert pipeline.table(SOURCE).equals(loaded)
    assert set(loaded["rank"]) == {f"#{index}" if index % 2 == 0 else str(index) for index in range(ROWS_PER_DAY)}
    for result in results:
        for event in result.all_events:
            assert DEFAULT_API_KEY not in str(event), event.event_type_value
    assert DEFAULT_API_KEY not in caplog.text
    for blob in gcs_client.list_blobs(pipeline.bucket):
        assert DEFAULT_API_KEY.encode() not in blob.download_as_bytes(), blob.name


class _KilledStore(ObjectStore):
    """The bucket as a build sees it when its process dies after `uploads` Parquet uploads."""

    def __init__(self, store: ObjectStore, uploads: int) -> None:
        self.__dict__.update(store.__dict__)
        self._uploads_left = uploads

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        if self._uploads_left <= 0:
            raise KeyboardInterrupt("killed")
        self._uploads_left -= 1
        super().put_file(key, path, content_type)


@dataclass(frozen=True)
class Landed:
    """Four days built and loaded through Dagster, and the bucket as the stages see it."""

    store: ObjectStore
    days: ExportWindow
    keys: list[dg.AssetKey]
    table: pl.DataFrame


def landed_four_days(pipeline: Pipeline) -> Landed:
    days = ExportWindow(YESTERDAY - timedelta(days=3), YESTERDAY)
    keys = keys_of(sources=[SOURCE])
    pipeline.materialize(days.start, days.end, keys)
    store = HatchStorageResource(project=pipeline.local_gcp.project, bucket=pipeline.bucket).store()
    return Landed(store, days, keys, pipeline.table(SOURCE))


def build(store: ObjectStore, days: ExportWindow, **options: Any) -> ParquetBuild:
    return build_parquet(
        SOURCE,
        days,
        store=store,
        timezone="UTC",
        loaded_at=datetime.now(UTC),
        today=YESTERDAY + timedelta(days=1),
        **options,
    )


def test_a_parquet_build_killed_half_way_publishes_no_day(pipeline: Pipeline) -> None:
    landed = landed_four_days(pipeline)
    published = published_days(landed.store, SOURCE, landed.days)

    with pytest.raises(KeyboardInterrupt):
        build(_KilledStore(landed.store, uploads=2), landed.days)

    assert published_days(landed.store, SOURCE, landed.days) == published
    pipeline.materialize(landed.days.start, landed.days.end, landed.keys[2:])
    assert pipeline.table(SOURCE).equals(landed.table), "the BigQuery load must see only the last published build"


def test_a_later_build_of_the_days_deletes_the_files_a_killed_build_left(pipeline: Pipeline) -> None:
    landed = landed_four_days(pipeline)
    store, days = landed.store, landed.days
    with pytest.raises(KeyboardInterrupt):
        build(_KilledStore(store, uploads=2), days)
    orphans = set(store.list(parquet_prefix(SOURCE))) - named_files(store, days)
    assert len(orphans) == 2

    # Files this young may be a build's that is still running: the default grace period keeps them.
    assert build(store, days).orphans_deleted == ()
    assert orphans <= set(store.list(parquet_prefix(SOURCE)))

    assert set(build(store, days, orphan_grace=timedelta(0)).orphans_deleted) == orphans
    assert set(store.list(parquet_prefix(SOURCE))) == named_files(store, days), "only published files are left"
    pipeline.materialize(days.start, days.end, landed.keys[2:])
    assert without_load_time(pipeline.table(SOURCE)).equals(without_load_time(landed.table))


def named_files(store: ObjectStore, days: ExportWindow) -> set[str]:
    return {record.file for record in published_days(store, SOURCE, days).values() if record.file}

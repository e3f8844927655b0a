"""The local emulators start, serve the official clients, and stop; failures say what went wrong. The GCS emulator
enforces generation preconditions, which the rate ledger and `ObjectStore.put_file_once` rely on."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from google.api_core.exceptions import PreconditionFailed
from google.cloud import bigquery
from google.cloud.storage import Blob, Bucket
from google.cloud.storage import Client as StorageClient

from hatch_pipeline.google_clients import bigquery_client, emulator_url, storage_client
from hatch_pipeline.local.processes import ServiceStartError
from hatch_pipeline.local.services import bigquery_emulator, gcs_emulator, gcs_local_root
from hatch_pipeline.storage.store import ObjectStore
from hatch_pipeline_tests.support.gcp_fixtures import LocalGcp

Upload = Callable[[Blob, bytes, int], None]
"""Write the bytes to the blob only if its generation is still the given one (0: only if it does not exist)."""


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def refuses_connections(endpoint: str) -> bool:
    try:
        httpx.get(endpoint, timeout=2.0)
    except httpx.ConnectError:
        return True
    return False


def test_objects_written_through_the_storage_client_are_plain_files(gcs_bucket: Bucket, local_gcp: LocalGcp) -> None:
    gcs_bucket.blob("raw/contact_history/2026-03-01.zip").upload_from_string(b"PK\x03\x04 zip bytes")

    folder = gcs_local_root(local_gcp.gcs_data_dir) / gcs_bucket.name
    assert (folder / "raw/contact_history/2026-03-01.zip").read_bytes() == b"PK\x03\x04 zip bytes"
    # Metadata lives in an extended attribute, not in sidecar files that a load of `gs://.../*` would pick up.
    assert [path for path in folder.rglob("*") if path.is_file()] == [folder / "raw/contact_history/2026-03-01.zip"]


def upload_string(blob: Blob, data: bytes, generation: int) -> None:
    blob.upload_from_string(data, if_generation_match=generation)


def upload_file(blob: Blob, data: bytes, generation: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload.bin"
        path.write_bytes(data)
        blob.upload_from_filename(str(path), if_generation_match=generation)


@pytest.mark.parametrize("upload", [upload_string, upload_file])
def test_the_gcs_emulator_refuses_a_write_at_a_stale_generation(gcs_bucket: Bucket, upload: Upload) -> None:
    name = "hatch/ledger/org.json"
    upload(gcs_bucket.blob(name), b"first", 0)
    with pytest.raises(PreconditionFailed):
        upload(gcs_bucket.blob(name), b"second", 0)
    reader = gcs_bucket.blob(name)
    assert reader.download_as_bytes() == b"first"
    read_at = reader.generation  # from the download's own response, as the ledger reads it
    assert read_at

    upload(gcs_bucket.blob(name), b"third", read_at)
    with pytest.raises(PreconditionFailed):
        upload(gcs_bucket.blob(name), b"fourth", read_at)
    assert gcs_bucket.blob(name).download_as_bytes() == b"third"


@pytest.mark.xfail(
    raises=pytest.fail.Exception,
    strict=True,
    reason="fake-gcs-server 1.54 (the wheel's) ignores preconditions on resumable uploads; 1.55 enforces them",
)
def test_the_gcs_emulator_refuses_a_resumable_upload_at_a_stale_generation(gcs_bucket: Bucket) -> None:
    big = bytes(9 * 1024 * 1024)  # above 8 MiB the client uploads resumable instead of in one request
    upload_file(gcs_bucket.blob("big.bin"), big, 0)
    with pytest.raises(PreconditionFailed):
        upload_file(gcs_bucket.blob("big.bin"), big, 0)


def test_put_file_once_loses_a_race_without_replacing_the_object(
    gcs_client: StorageClient, gcs_bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, theirs = tmp_path / "ours.zip", tmp_path / "theirs.zip"
    ours.write_bytes(b"ours")
    theirs.write_bytes(b"theirs")
    store = ObjectStore(gcs_client, gcs_bucket.name, "hatch")
    assert store.put_file_once("raw/a.zip", theirs, "application/zip")
    # The rival wrote between our existence check and our upload: only the precondition stands in the way now.
    monkeypatch.setattr(Blob, "exists", lambda *_args, **_kwargs: False)

    assert not store.put_file_once("raw/a.zip", ours, "application/zip")
    assert gcs_bucket.blob("hatch/raw/a.zip").download_as_bytes() == b"theirs"


def test_clients_accept_an_emulator_host_without_scheme(local_gcp: LocalGcp, gcs_bucket: Bucket) -> None:
    gcs_host = local_gcp.gcs_endpoint.removeprefix("http://")
    bigquery_host = local_gcp.bigquery_endpoint.removeprefix("http://")

    blobs = storage_client(None, gcs_host).list_blobs(gcs_bucket.name)
    rows = bigquery_client(local_gcp.project, local_gcp.location, bigquery_host).query("SELECT 6 * 7 AS answer")

    assert list(blobs) == []
    assert [row["answer"] for row in rows.result()] == [42]


def test_emulator_url_adds_the_scheme_the_client_libraries_need() -> None:
    assert emulator_url("127.0.0.1:9050") == "http://127.0.0.1:9050"
    assert emulator_url("http://127.0.0.1:9050/") == "http://127.0.0.1:9050"


def test_the_gcs_emulator_stops_when_the_block_ends(tmp_path: Path) -> None:
    with gcs_emulator(tmp_path / "gcs") as endpoint:
        bucket = storage_client("hatch-local", endpoint).create_bucket("lifecycle")
        assert bucket.exists()
    assert refuses_connections(f"{endpoint}/storage/v1/b")


def test_the_bigquery_emulator_starts_offline_from_a_new_home_and_stops_with_the_block(tmp_path: Path) -> None:
    home = tmp_path / "bigquery-home"
    with bigquery_emulator("hatch-other", gcs_data_dir=tmp_path / "gcs", home_dir=home) as endpoint:
        client = bigquery_client("hatch-other", "US", endpoint)
        client.create_dataset(bigquery.Dataset("hatch-other.probe"))
        assert [dataset.dataset_id for dataset in client.list_datasets()] == ["probe"]
    assert refuses_connections(endpoint)


def test_a_taken_port_is_refused_before_starting(tmp_path: Path, occupied_port: int) -> None:
    with (
        pytest.raises(ServiceStartError, match=f"port {occupied_port} on 127.0.0.1 is not free"),
        gcs_emulator(tmp_path / "gcs", port=occupied_port),
    ):
        pytest.fail("the emulator should not have started")

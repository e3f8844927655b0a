"""pytest fixtures: one GCS emulator and one BigQuery emulator per test session, their clients, fresh namespaces.

Register with `pytest_plugins = ["hatch_pipeline_tests.support.gcp_fixtures"]` in a conftest, or run
`pytest -p hatch_pipeline_tests.support.gcp_fixtures`. Both emulators start on free loopback ports (about 3 s together)
and stop when the session ends. Tests get a fresh bucket and dataset each, so they never see each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.cloud import bigquery
from google.cloud.storage import Bucket
from google.cloud.storage import Client as StorageClient

from hatch_pipeline.google_clients import bigquery_client, storage_client
from hatch_pipeline.local.services import bigquery_emulator, gcs_emulator

GCP_PROJECT = "hatch-local"
BQ_LOCATION = "US"


@dataclass(frozen=True)
class LocalGcp:
    """Where the session's emulators listen, and the folder behind the storage emulator's buckets."""

    project: str
    location: str
    gcs_endpoint: str
    bigquery_endpoint: str
    gcs_data_dir: Path


@pytest.fixture(scope="session")
def local_gcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalGcp]:
    root = tmp_path_factory.mktemp("local-gcp")
    gcs_data_dir = root / "gcs"
    with (
        gcs_emulator(gcs_data_dir) as gcs_endpoint,
        bigquery_emulator(GCP_PROJECT, gcs_data_dir=gcs_data_dir, home_dir=root / "bigquery-home") as bq_endpoint,
    ):
        yield LocalGcp(GCP_PROJECT, BQ_LOCATION, gcs_endpoint, bq_endpoint, gcs_data_dir)


@pytest.fixture(scope="session")
def gcs_client(local_gcp: LocalGcp) -> StorageClient:
    return storage_client(local_gcp.project, local_gcp.gcs_endpoint)


@pytest.fixture(scope="session")
def bq_client(local_gcp: LocalGcp) -> bigquery.Client:
    return bigquery_client(local_gcp.project, local_gcp.location, local_gcp.bigquery_endpoint)


@pytest.fixture
def gcs_bucket(gcs_client: StorageClient) -> Bucket:
    """A new, empty bucket (the storage emulator's files live in the session's temporary folder)."""
    return gcs_client.create_bucket(f"test-{uuid.uuid4().hex[:16]}")


@pytest.fixture
def bq_dataset(bq_client: bigquery.Client, local_gcp: LocalGcp) -> Iterator[str]:
    """The name of a new, empty dataset in the emulator's project; dropped with its tables afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    dataset = bigquery.Dataset(f"{local_gcp.project}.{name}")
    dataset.location = local_gcp.location
    bq_client.create_dataset(dataset)
    yield name
    bq_client.delete_dataset(dataset.reference, delete_contents=True, not_found_ok=True)


@pytest.fixture
def gcp_emulator_env(local_gcp: LocalGcp, monkeypatch: pytest.MonkeyPatch) -> LocalGcp:
    """Point STORAGE_EMULATOR_HOST and BIGQUERY_EMULATOR_HOST at the session's emulators for one test."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", local_gcp.gcs_endpoint)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", local_gcp.bigquery_endpoint)
    return local_gcp

"""The local servers a benchmark runs against: the sandbox API, the GCS emulator and the BigQuery emulator (reading
the GCS emulator's files), with the official clients, in a scratch folder that goes away with them."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from google.cloud import bigquery
from google.cloud.storage import Client as StorageClient

from hatch_pipeline.google_clients import bigquery_client, storage_client
from hatch_pipeline.local.sandbox.server import SandboxServer
from hatch_pipeline.local.services import bigquery_emulator, gcs_emulator


@dataclass(frozen=True)
class LocalServers:
    scratch: Path
    """A folder for the benchmark's own files."""
    sandbox: SandboxServer
    gcs_endpoint: str
    bigquery_endpoint: str
    storage: StorageClient
    bigquery: bigquery.Client


@contextmanager
def local_servers(project: str, prefix: str) -> Iterator[LocalServers]:
    """All three servers started, and stopped when the block ends; `prefix` names the scratch folder."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        root = Path(scratch)
        with (
            gcs_emulator(root / "gcs") as gcs_endpoint,
            bigquery_emulator(project, gcs_data_dir=root / "gcs", home_dir=root / "bq-home") as bq_endpoint,
            SandboxServer() as sandbox,
        ):
            yield LocalServers(
                scratch=root,
                sandbox=sandbox,
                gcs_endpoint=gcs_endpoint,
                bigquery_endpoint=bq_endpoint,
                storage=storage_client(project, gcs_endpoint),
                bigquery=bigquery_client(project, "US", bq_endpoint),
            )

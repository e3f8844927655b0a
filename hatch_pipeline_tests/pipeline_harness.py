"""The whole pipeline as a user runs it, for the tests that need it: the six assets materialized by Dagster
against the sandbox API, the GCS emulator and the BigQuery emulator, over real connections with the official
clients. Registered in conftest.py, so any test can ask for the `pipeline` fixture."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl
import pytest
from google.cloud import bigquery
from google.cloud.storage import Client as StorageClient

from hatch_pipeline.assets import bigquery_key, build_source_assets, parquet_key, raw_key
from hatch_pipeline.automation import daily_partitions
from hatch_pipeline.export_api.windows import DataSource, OutputFormat
from hatch_pipeline.local_services import bigquery_client
from hatch_pipeline.resources import HatchBigQueryResource, HatchExportResource, HatchStorageResource
from hatch_pipeline.sandbox.data import DEFAULT_API_KEY
from hatch_pipeline.sandbox.server import SandboxServer
from hatch_pipeline.settings import Settings
from hatch_pipeline_tests.gcp_fixtures import LocalGcp

ROWS_PER_DAY = 12
YESTERDAY = datetime.now(UTC).date() - timedelta(days=1)
SOURCES: tuple[DataSource, ...] = ("contact_history", "conversation_items")
DEFAULT_SETTINGS = Settings()


@dataclass
class Pipeline:
    """One isolated installation: its own bucket, dataset and sandbox, and the assets wired to them."""

    sandbox: SandboxServer
    local_gcp: LocalGcp
    bucket: str
    dataset: str
    output_format: OutputFormat = "json"

    def resources(self) -> dict[str, object]:
        return {
            "hatch_api": HatchExportResource(
                api_key=DEFAULT_API_KEY,
                base_url=self.sandbox.base_url,
                ledger_url=f"gs://{self.bucket}/hatch",
                output_format=self.output_format,
                min_export_interval_seconds=0.01,
                max_attempts=2,
                retry_base_delay_seconds=0.01,
                max_payload_bytes=self.sandbox.config.max_payload_bytes,
            ),
            "hatch_storage": HatchStorageResource(project=self.local_gcp.project, bucket=self.bucket),
            "hatch_bigquery": HatchBigQueryResource(
                project=self.local_gcp.project,
                location=self.local_gcp.location,
                dataset=self.dataset,
                emulator_host=self.local_gcp.bigquery_endpoint,
            ),
        }

    def materialize(
        self,
        start: date,
        end: date,
        keys: Sequence[dg.AssetKey] | None = None,
        *,
        raise_on_error: bool = True,
        settings: Settings = DEFAULT_SETTINGS,
    ) -> dg.ExecuteInProcessResult:
        partitions = daily_partitions(settings)
        assets = [asset for source in SOURCES for asset in build_source_assets(source, partitions)]
        return dg.materialize(
            assets,
            selection=keys,
            resources=self.resources(),
            tags={
                "dagster/asset_partition_range_start": start.isoformat(),
                "dagster/asset_partition_range_end": end.isoformat(),
            },
            raise_on_error=raise_on_error,
        )

    def exports(self) -> list[tuple[str | None, str | None, str | None, int]]:
        """What the vendor saw: (source, start, end, status) per export request."""
        return [
            (record.data_source, record.start_date, record.end_date, record.status)
            for record in self.sandbox.access_log
        ]

    def table(self, source: DataSource) -> pl.DataFrame:
        client = bigquery_client(self.local_gcp.project, self.local_gcp.location, self.local_gcp.bigquery_endpoint)
        natural_id = "contact_history_id" if source == "contact_history" else "id"
        query = f"SELECT * FROM `{self.local_gcp.project}.{self.dataset}.{source}` ORDER BY {natural_id}"
        frame = pl.from_arrow(client.query(query).to_arrow(create_bqstorage_client=False))
        assert isinstance(frame, pl.DataFrame)
        return frame


def keys_of(*stages: str, sources: Sequence[DataSource] = SOURCES) -> list[dg.AssetKey]:
    """The asset keys of `stages` (all three when none are named) of `sources`."""
    makers = {"raw": raw_key, "parquet": parquet_key, "bigquery": bigquery_key}
    return [makers[stage](source) for stage in stages or makers for source in sources]


def without_load_time(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop("_loaded_at")


@pytest.fixture
def pipeline(gcp_emulator_env: LocalGcp, gcs_client: StorageClient, bq_client: bigquery.Client) -> Iterator[Pipeline]:
    bucket = gcs_client.create_bucket(f"hatch-{uuid.uuid4().hex[:12]}").name
    dataset = f"hatch_{uuid.uuid4().hex[:12]}"
    with SandboxServer() as sandbox:
        sandbox.config = dataclasses.replace(sandbox.config, rows_per_day=ROWS_PER_DAY)
        yield Pipeline(sandbox, gcp_emulator_env, bucket, dataset)
    bq_client.delete_dataset(f"{gcp_emulator_env.project}.{dataset}", delete_contents=True, not_found_ok=True)

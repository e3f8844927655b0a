"""A whole installation for tests: the six assets wired to a sandbox of the API, the GCS emulator and the
BigQuery emulator (own bucket, dataset and sandbox per test), materialized by Dagster as a user would."""

from __future__ import annotations

import io
import os
import shutil
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import polars as pl
import pytest
from google.cloud import bigquery
from google.cloud.storage import Client as StorageClient

from hatch_pipeline.contract import DataSource, ExportWindow, OutputFormat, parse_day
from hatch_pipeline.defs.assets import build_source_assets
from hatch_pipeline.defs.checks import build_source_checks
from hatch_pipeline.defs.constants import bigquery_key, parquet_key, raw_key
from hatch_pipeline.defs.partitions import daily_partitions, range_tags
from hatch_pipeline.defs.resources import HatchBigQueryResource, HatchExportResource, HatchStorageResource
from hatch_pipeline.google_clients import bigquery_client
from hatch_pipeline.local.demo import PROJECT_ROOT
from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY, SandboxConfig
from hatch_pipeline.local.sandbox.server import SandboxServer
from hatch_pipeline.settings import Settings
from hatch_pipeline_tests.support.gcp_fixtures import LocalGcp

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
    api_options: dict[str, Any] = field(default_factory=dict)
    """Overrides of the HatchExportResource fields, e.g. a small max_exports_per_day."""
    asset_options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of `build_source_assets`, e.g. a quicker bigquery_retry_policy."""

    def resources(self) -> dict[str, object]:
        api_options: dict[str, Any] = {
            "min_export_interval_seconds": 0.01,
            "max_attempts": 2,
            "retry_base_delay_seconds": 0.01,
            "max_payload_bytes": self.sandbox.config.max_payload_bytes,
            **self.api_options,
        }
        return {
            "hatch_api": HatchExportResource(
                api_key=DEFAULT_API_KEY,
                base_url=self.sandbox.base_url,
                ledger_url=f"gs://{self.bucket}/hatch",
                output_format=self.output_format,
                **api_options,
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
        keys: Sequence[dg.AssetKey] | dg.AssetSelection | None = None,
        *,
        raise_on_error: bool = True,
        settings: Settings = DEFAULT_SETTINGS,
        tags: Mapping[str, str] | None = None,
        instance: dg.DagsterInstance | None = None,
    ) -> dg.ExecuteInProcessResult:
        partitions = daily_partitions(settings)
        assets = [
            asset
            for source in SOURCES
            for asset in build_source_assets(
                source, partitions, date_column=settings.date_column(source), **self.asset_options
            )
        ]
        checks = [check for source in SOURCES for check in build_source_checks(source, settings)]
        return dg.materialize(
            [*assets, *checks],
            selection=keys,
            resources=self.resources(),
            tags={**range_tags(ExportWindow(start, end)), **(tags or {})},
            raise_on_error=raise_on_error,
            instance=instance,
        )

    def cli_env(self, dagster_home: Path, **settings: str) -> dict[str, str]:
        """The environment of a `dagster` command run against this installation, as a deployment sets it:
        HATCH_* variables, the emulators, and a DAGSTER_HOME holding the project's dagster.yaml."""
        dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
        environment = {name: value for name, value in os.environ.items() if not name.startswith("HATCH_")}
        return {
            **environment,
            "DAGSTER_HOME": str(dagster_home),
            "HATCH_API_KEY": DEFAULT_API_KEY,
            "HATCH_API_BASE_URL": self.sandbox.base_url,
            "HATCH_GCS_BUCKET": self.bucket,
            "HATCH_BQ_PROJECT": self.local_gcp.project,
            "HATCH_BQ_DATASET": self.dataset,
            "HATCH_MAX_PAYLOAD_BYTES": str(self.sandbox.config.max_payload_bytes),
            "STORAGE_EMULATOR_HOST": self.local_gcp.gcs_endpoint,
            "BIGQUERY_EMULATOR_HOST": self.local_gcp.bigquery_endpoint,
            **settings,
        }

    def exports(self) -> list[tuple[str | None, str | None, str | None, int]]:
        """What the vendor saw: (source, start, end, status) per export request, in order of arrival."""
        return [
            (record.data_source, record.start_date, record.end_date, record.status)
            for record in sorted(self.sandbox.access_log, key=lambda record: record.at)
        ]

    def table(self, source: DataSource, *, view: bool = False) -> pl.DataFrame:
        """Every row of the source's table, or of its `_latest` view."""
        client = bigquery_client(self.local_gcp.project, self.local_gcp.location, self.local_gcp.bigquery_endpoint)
        natural_id = "contact_history_id" if source == "contact_history" else "id"
        name = f"{source}_latest" if view else source
        query = f"SELECT * FROM `{self.local_gcp.project}.{self.dataset}.{name}` ORDER BY `{natural_id}`"
        frame = pl.from_arrow(client.query(query).to_arrow(create_bqstorage_client=False))
        assert isinstance(frame, pl.DataFrame)
        return frame


def keys_of(*stages: str, sources: Sequence[DataSource] = SOURCES) -> list[dg.AssetKey]:
    """The asset keys of `stages` (all three when none are named) of `sources`."""
    makers = {"raw": raw_key, "parquet": parquet_key, "bigquery": bigquery_key}
    return [makers[stage](source) for stage in stages or makers for source in sources]


def without_load_time(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop("_loaded_at")


@contextmanager
def isolated_pipeline(
    local_gcp: LocalGcp, gcs_client: StorageClient, bq_client: bigquery.Client, sandbox_config: SandboxConfig
) -> Iterator[Pipeline]:
    """A new bucket, dataset and sandbox (serving `sandbox_config`); the dataset is dropped afterwards."""
    bucket = gcs_client.create_bucket(f"hatch-{uuid.uuid4().hex[:12]}").name
    dataset = f"hatch_{uuid.uuid4().hex[:12]}"
    try:
        with SandboxServer(sandbox_config) as sandbox:
            yield Pipeline(sandbox, local_gcp, bucket, dataset)
    finally:
        bq_client.delete_dataset(f"{local_gcp.project}.{dataset}", delete_contents=True, not_found_ok=True)


@pytest.fixture
def pipeline(gcp_emulator_env: LocalGcp, gcs_client: StorageClient, bq_client: bigquery.Client) -> Iterator[Pipeline]:
    with isolated_pipeline(gcp_emulator_env, gcs_client, bq_client, SandboxConfig(rows_per_day=ROWS_PER_DAY)) as made:
        yield made


def one_day_bytes(pipeline: Pipeline) -> int:
    """Yesterday's contact_history export size, measured on a twin of the test's sandbox (its data depends only
    on the configuration), so the test's own sandbox neither logs nor counts the request."""
    with SandboxServer(pipeline.sandbox.config) as twin:
        response = httpx.get(
            f"{twin.base_url}/export-data",
            params={"data_source": "contact_history", "start_date": str(YESTERDAY), "end_date": str(YESTERDAY)},
            headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"},
        )
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        return archive.infolist()[0].file_size


def days_of(start: str | None, end: str | None) -> list[str]:
    """The days of an access-log record's window, as YYYY-MM-DD."""
    assert start and end, "an export request names both dates"
    return [day.isoformat() for day in ExportWindow(parse_day(start, "start"), parse_day(end, "end")).dates()]

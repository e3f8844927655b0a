"""Dagster resources: thin, configurable shells that build the plain-Python clients of hatch_pipeline."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import dagster as dg
from dagster_gcp import BigQueryResource, GCSResource
from google.cloud import bigquery, storage
from pydantic import Field, PrivateAttr

from hatch_pipeline.contract import OutputFormat
from hatch_pipeline.export_api.client import ExportRetry, HatchExportClient
from hatch_pipeline.export_api.gcs_ledger import GcsLedgerStore
from hatch_pipeline.export_api.ledger import LedgerStore, LocalLedgerStore, RateLedger, organization_key
from hatch_pipeline.google_clients import bigquery_client
from hatch_pipeline.settings import DEFAULT_API_BASE_URL, Settings
from hatch_pipeline.storage.store import ObjectStore

_DEFAULTS: Final = Settings()
_FROM_SETTINGS: Final = {
    "base_url": "api_base_url",
    "output_format": "output_format",
    "min_export_interval_seconds": "min_export_interval_seconds",
    "export_guard_seconds": "export_guard_seconds",
    "max_exports_per_day": "max_exports_per_day",
    "max_payload_bytes": "max_payload_bytes",
}
"""The export resource's fields that are HATCH_* settings, by the Settings attribute each one is: the one mapping
both ways (`export_resource` reads the settings; `_settings` checks the fields by the same rules)."""


class HatchExportResource(dg.ConfigurableResource["HatchExportResource"]):
    """The Hatch Bulk Export API, reached only through the shared rate ledger."""

    api_key: str = Field(
        repr=False,
        description=(
            'Hatch Bulk Export API key. Pass dagster.EnvVar("HATCH_API_KEY") so the key never appears in run '
            "config, the UI or logs."
        ),
    )
    ledger_url: str = Field(
        description=(
            "Where the shared rate ledger lives: gs://bucket/prefix (durable, shared by every machine; the one to "
            "use in deployments) or a local folder (one machine only). Everything that exports with the same "
            "API key must use the same ledger, or together it can exceed the vendor's limits."
        ),
    )
    base_url: str = Field(
        default=DEFAULT_API_BASE_URL,
        description="Base URL of the Bulk Export API (HATCH_API_BASE_URL); plain http is allowed only on loopback.",
    )
    output_format: OutputFormat = Field(
        default=_DEFAULTS.output_format,
        description="Format of the file inside each exported ZIP: json (newline-delimited) or csv.",
    )
    min_export_interval_seconds: float = Field(
        default=_DEFAULTS.min_export_interval_seconds,
        description="Least time between two exports of the organization (the vendor allows one per 5 minutes).",
    )
    export_guard_seconds: float | None = Field(
        default=_DEFAULTS.export_guard_seconds,
        description=(
            "Guard band added to the interval, so requests leaving several processes or machines never arrive "
            "closer than the interval at the vendor (HATCH_EXPORT_GUARD_SECONDS; unset: 1 % of the interval)."
        ),
    )
    max_exports_per_day: int = Field(
        default=_DEFAULTS.max_exports_per_day,
        description="Most exports of the organization in any 24 hours (the vendor allows 100).",
    )
    max_payload_bytes: int = Field(
        default=_DEFAULTS.max_payload_bytes,
        description="Uncompressed size above which the vendor answers 413; larger ZIPs are refused as well.",
    )
    max_slot_wait_seconds: float = Field(
        default=900.0,
        description=(
            "Longest an export waits for a free ledger slot or for the vendor's Retry-After (one budget for both); "
            "beyond that the raw step stops cleanly, naming when the next slot opens, instead of holding a worker."
        ),
    )
    max_attempts: int = Field(
        default=ExportRetry.max_attempts,
        description="Attempts per export that may end in 5xx, timeouts or broken bodies before the step fails.",
    )
    retry_base_delay_seconds: float = Field(
        default=ExportRetry.base_delay_seconds,
        description="First backoff delay after such a failure; it doubles per attempt, with jitter.",
    )

    max_quota_pauses: int = Field(
        default=7,
        description=(
            "How many times a raw step that reached the vendor's limits stops cleanly, waits for the next slot "
            "(Dagster RetryRequested; the pool slot is given back meanwhile) and carries on with the days not yet "
            "stored, before it fails. Each pause lasts at most until the rolling 24-hour cap opens again."
        ),
    )

    _ledger: RateLedger | None = PrivateAttr(default=None)

    def ledger(self) -> RateLedger:
        """The rate ledger of this key's organization, in the configured store; built once per resource, so a
        step's client and stages share one ledger and one storage client."""
        if self._ledger is None:
            self._ledger = self._new_ledger()
        return self._ledger

    def _new_ledger(self) -> RateLedger:
        self._settings().validate()
        return RateLedger(
            self._ledger_store(),
            organization=organization_key(self.api_key),
            min_interval=timedelta(seconds=self.min_export_interval_seconds),
            guard=None if self.export_guard_seconds is None else timedelta(seconds=self.export_guard_seconds),
            max_per_day=self.max_exports_per_day,
            max_wait=timedelta(seconds=self.max_slot_wait_seconds),
        )

    @contextmanager
    def client(self, timezone: str, log: logging.Logger | None = None) -> Iterator[HatchExportClient]:
        """An export client bound to the ledger, logging each attempt to `log` (a run's `context.log`); closed
        (connections released) when the block ends. `timezone` is Hatch's day boundary (HATCH_TIMEZONE, the
        partitions' zone): its 'today' decides which days the vendor serves."""
        with HatchExportClient(
            api_key=self.api_key,
            base_url=self.base_url,
            ledger=self.ledger(),
            output_format=self.output_format,
            max_payload_bytes=self.max_payload_bytes,
            timezone=timezone,
            retry=ExportRetry(max_attempts=self.max_attempts, base_delay_seconds=self.retry_base_delay_seconds),
            log=log,
        ) as client:
            yield client

    def _settings(self) -> Settings:
        """These fields as the HATCH_* settings they are, so a bad value fails with the variable's name and the fix."""
        return Settings(**{name: getattr(self, field) for field, name in _FROM_SETTINGS.items()})

    def _ledger_store(self) -> LedgerStore:
        if not self.ledger_url.startswith("gs://"):
            return LocalLedgerStore(Path(self.ledger_url).expanduser())
        parts = urlsplit(self.ledger_url)
        if not parts.netloc:
            raise ValueError(f"ledger_url {self.ledger_url!r} names no bucket; use gs://BUCKET/PREFIX")
        # With STORAGE_EMULATOR_HOST set, the client talks to that emulator with anonymous credentials.
        return GcsLedgerStore(storage.Client(), parts.netloc, parts.path.strip("/"))


def export_resource(settings: Settings, api_key: str | dg.EnvVar) -> HatchExportResource:
    """The export resource as the HATCH_* settings describe it; the key stays an EnvVar in deployments."""
    return HatchExportResource(
        api_key=api_key,
        ledger_url=settings.ledger_url,
        **{field: getattr(settings, name) for field, name in _FROM_SETTINGS.items()},
    )


class HatchStorageResource(GCSResource):
    """The bucket and prefix that hold raw ZIPs, Parquet and the rate ledger (dagster-gcp's GCSResource beneath)."""

    bucket: str = Field(description="Bucket for raw ZIPs, Parquet files and the rate ledger (HATCH_GCS_BUCKET).")
    prefix: str = Field(default="hatch", description="Prefix of every object inside the bucket (HATCH_GCS_PREFIX).")

    def store(self) -> ObjectStore:
        return ObjectStore(self.get_client(), self.bucket, self.prefix)


class HatchBigQueryResource(BigQueryResource):
    """dagster-gcp's BigQueryResource plus the dataset that holds one table per data source, and a local emulator
    in place of Google when `emulator_host` is set (as Google's storage client does for STORAGE_EMULATOR_HOST)."""

    dataset: str = Field(default="hatch", description="Dataset holding one table per data source (HATCH_BQ_DATASET).")
    emulator_host: str | None = Field(
        default=None,
        description="host:port of a local BigQuery emulator, reached with anonymous credentials "
        "(BIGQUERY_EMULATOR_HOST); unset: Google, with Application Default Credentials.",
    )

    @contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        if self.emulator_host is None:
            with super().get_client() as client:
                yield client
        else:
            yield bigquery_client(self.project or "", self.location or "US", self.emulator_host)


def pipeline_resources(settings: Settings) -> dict[str, dg.ConfigurableResource[Any]]:
    """Every resource the assets use, from the HATCH_* settings. Required values without a default (the key, the
    bucket, the project) stay EnvVars, so Definitions load anywhere and a run names what is missing."""
    return {
        "hatch_api": export_resource(settings, dg.EnvVar("HATCH_API_KEY")),
        "hatch_storage": HatchStorageResource(
            project=settings.bq_project, bucket=dg.EnvVar("HATCH_GCS_BUCKET"), prefix=settings.gcs_prefix
        ),
        "hatch_bigquery": HatchBigQueryResource(
            project=dg.EnvVar("HATCH_BQ_PROJECT"),
            location=settings.bq_location,
            dataset=settings.bq_dataset,
            emulator_host=settings.bigquery_emulator_host,
        ),
    }

"""Resources that point the pipeline at the local emulators: chosen by loading `hatch_pipeline.local.definitions`,
never imported by the production shell."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from google.cloud import bigquery
from pydantic import Field

from hatch_pipeline.defs.resources import HatchBigQueryResource, pipeline_resources
from hatch_pipeline.local.services import bigquery_client
from hatch_pipeline.settings import Settings


class EmulatorBigQueryResource(HatchBigQueryResource):
    """The BigQuery resource against a local emulator: its endpoint, and anonymous credentials (Google's client
    would otherwise look for default credentials and fail offline)."""

    emulator_host: str = Field(description="http://host:port of the BigQuery emulator (BIGQUERY_EMULATOR_HOST).")

    @contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        yield bigquery_client(self.project or "", self.location or "US", self.emulator_host)


def local_resources(settings: Settings) -> dict[str, dg.ConfigurableResource[Any]]:
    """The production resources with BigQuery pointed at BIGQUERY_EMULATOR_HOST. Cloud Storage needs no stand-in
    class: Google's client follows STORAGE_EMULATOR_HOST by itself."""
    return {
        **pipeline_resources(settings),
        "hatch_bigquery": EmulatorBigQueryResource(
            project=dg.EnvVar("HATCH_BQ_PROJECT"),
            location=settings.bq_location,
            dataset=settings.bq_dataset,
            emulator_host=dg.EnvVar("BIGQUERY_EMULATOR_HOST"),
        ),
    }

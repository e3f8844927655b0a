"""A deployment on this machine, as an operator runs one: `dagster dev` (the webserver and the daemon, in their own
processes) on a fresh DAGSTER_HOME holding the project's dagster.yaml, loading `hatch_pipeline.local.definitions`
against its own sandbox of the API, bucket and dataset in the session's emulators. Tests talk to it only as a user
would: over the webserver's GraphQL API (see graphql.py), and by looking at the vendor's access log, the bucket
and the tables.

One deployment per test module: its tests share the instance and run in the order they are written.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import pytest
from google.cloud import bigquery
from google.cloud.storage import Client as StorageClient

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.local.dagster_dev import DagsterWebserver, running_dagster
from hatch_pipeline.local.sandbox.data import SandboxConfig
from hatch_pipeline_tests.gcp_fixtures import LocalGcp
from hatch_pipeline_tests.pipeline_fixtures import ROWS_PER_DAY, Pipeline, isolated_pipeline

EXPORT_INTERVAL_SECONDS: Final = 1.0
"""The sandbox's and the ledger's spacing between exports: measurable at arrival, yet short enough to be fast."""
EXPORT_GUARD_SECONDS: Final = 0.2
"""At a 1 s interval the default guard (1 %: 10 ms) is below a ledger write's latency on a busy machine."""
DAYS: Final = 14


@dataclass(frozen=True)
class Deployment:
    """The running instance, the installation it writes to, and the days its partition set holds."""

    webserver: DagsterWebserver
    pipeline: Pipeline
    days: ExportWindow
    """From HATCH_FIRST_PARTITION to yesterday: the whole partition set."""
    env: Mapping[str, str]
    """The environment of every Dagster process of the deployment (the HATCH_* settings among it)."""


def schedule_cron_away_from(now: datetime) -> str:
    """A daily cron 12 hours from `now`: the daily schedule runs by default, and a tick of its own during the tests
    would spend exports the tests count."""
    return f"{now.minute} {(now.hour + 12) % 24} * * *"


@pytest.fixture(scope="module")
def deployment(
    local_gcp: LocalGcp,
    gcs_client: StorageClient,
    bq_client: bigquery.Client,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    now = datetime.now(UTC)
    yesterday = now.date() - timedelta(days=1)
    days = ExportWindow(yesterday - timedelta(days=DAYS - 1), yesterday)
    sandbox = SandboxConfig(
        rows_per_day=ROWS_PER_DAY,
        min_export_interval_seconds=EXPORT_INTERVAL_SECONDS,
        # A day without rows inside the range: the tables must show it as empty, not borrow rows from neighbours.
        empty_days=frozenset({days.start + timedelta(days=4)}),
    )
    with isolated_pipeline(local_gcp, gcs_client, bq_client, sandbox) as pipeline:
        dagster_home = tmp_path_factory.mktemp("dagster-home")
        env = pipeline.cli_env(
            dagster_home,
            HATCH_TIMEZONE="UTC",
            HATCH_FIRST_PARTITION=days.start.isoformat(),
            HATCH_MIN_EXPORT_INTERVAL_SECONDS=str(EXPORT_INTERVAL_SECONDS),
            HATCH_EXPORT_GUARD_SECONDS=str(EXPORT_GUARD_SECONDS),
            HATCH_SCHEDULE_CRON=schedule_cron_away_from(now),
        )
        with running_dagster(env, dagster_home) as webserver:
            yield Deployment(webserver, pipeline, days, env)

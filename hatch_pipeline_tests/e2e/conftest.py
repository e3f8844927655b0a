"""A deployment on this machine in the process layout of Kubernetes, as an operator runs one (support/deployment.py):
PostgreSQL, a code server (`dagster api grpc`) from an environment installed as the Dockerfile installs the image,
and the webserver and the daemon as processes of their own, on deploy/dagster.yaml (run queue, pools, run retries,
run monitoring; only the daemon's intervals shortened, see TEST_INTERVALS there), loading
`hatch_pipeline.definitions` against its own sandbox of the API, bucket and dataset in the session's emulators.
Tests talk to it only as a user would: over the webserver's GraphQL API (see graphql.py), and by looking at the
vendor's access log, the bucket and the tables.

One deployment per test module: its tests share the instance and run in the order they are written. Both schedules
are set to tick 12 hours away and the catch-up sensor starts stopped, so nothing runs that a test did not start.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Final

import pytest
from google.cloud import bigquery
from google.cloud.storage import Client as StorageClient

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.defs.constants import SENSOR_NAME
from hatch_pipeline.local.dagster_dev import DEFINITIONS_MODULE, DagsterWebserver
from hatch_pipeline.local.processes import venv_executable
from hatch_pipeline.local.sandbox.data import SandboxConfig
from hatch_pipeline_tests.support.bigquery_proxy import BigQueryProxy
from hatch_pipeline_tests.support.deployment import (
    deployed_environment,
    postgres_server,
    running_deployment,
    use_production_instance,
)
from hatch_pipeline_tests.support.gcp_fixtures import LocalGcp
from hatch_pipeline_tests.support.pipeline_fixtures import ROWS_PER_DAY, Pipeline, isolated_pipeline
from hatch_pipeline_tests.support.recording_server import RecordingServer

EXPORT_INTERVAL_SECONDS: Final = 1.0
"""The sandbox's and the ledger's spacing between exports: measurable at arrival, yet short enough to be fast."""
EXPORT_GUARD_SECONDS: Final = 0.2
"""At a 1 s interval the default guard (1 %: 10 ms) is below a ledger write's latency on a busy machine."""
DAYS: Final = 14
"""The days the module's backfill lands, up to yesterday."""
MISSING_DAYS: Final = 4
"""Days of the partition set before the backfill's range: left for the catch-up sensor to find."""


@dataclass(frozen=True)
class Deployment:
    """The running instance, the installation it writes to, and the days its partition set holds."""

    webserver: DagsterWebserver
    pipeline: Pipeline
    days: ExportWindow
    """The last DAYS days, up to yesterday: what the backfill test lands."""
    missing: ExportWindow
    """From HATCH_FIRST_PARTITION to the day before `days`: in the partition set, but no test lands them until the
    catch-up sensor does."""
    bigquery: BigQueryProxy
    alerts: RecordingServer
    """The webhook HATCH_ALERT_WEBHOOK names: what the failure-alert sensor posted."""
    """Between the deployment and the BigQuery emulator: it can hold load transactions, so a test sees which
    loads are in BigQuery together (bqemulator runs one job at a time)."""
    env: Mapping[str, str]
    """The environment of every Dagster process of the deployment (the HATCH_* settings among it)."""
    schedules_at: time
    """When both schedules tick (HATCH_SCHEDULE_CRON, HATCH_FRESH_BY; in UTC, the HATCH_TIMEZONE): 12 hours away."""


def half_a_day_from(now: datetime) -> time:
    """A time of day 12 hours from `now`: both schedules run by default, and a tick of theirs during the tests would
    spend exports or run checks the tests count (HATCH_SCHEDULE_CRON and HATCH_FRESH_BY are set to it)."""
    return (now + timedelta(hours=12)).time().replace(second=0, microsecond=0)


def stop_before_the_daemon_starts(sensor: str, env: Mapping[str, str], dagster_home: Path) -> None:
    """Stop a sensor that runs by default, as an operator would before a planned backfill, with `dagster sensor
    stop` on the instance: the daemon then never ticks it until a test starts it (the startSensor mutation)."""
    command = [str(venv_executable("dagster")), "sensor", "stop", "-m", DEFINITIONS_MODULE, sensor]
    stopped = subprocess.run(command, env=env, cwd=dagster_home, capture_output=True, text=True, check=False)
    assert stopped.returncode == 0, stopped.stderr[-3000:]


@pytest.fixture(scope="module")
def deployment(
    local_gcp: LocalGcp,
    gcs_client: StorageClient,
    bq_client: bigquery.Client,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    now = datetime.now(UTC)
    later = half_a_day_from(now)
    yesterday = now.date() - timedelta(days=1)
    days = ExportWindow(yesterday - timedelta(days=DAYS - 1), yesterday)
    missing = ExportWindow(days.start - timedelta(days=MISSING_DAYS), days.start - timedelta(days=1))
    sandbox = SandboxConfig(
        rows_per_day=ROWS_PER_DAY,
        min_export_interval_seconds=EXPORT_INTERVAL_SECONDS,
        # A day without rows inside the range: the tables must show it as empty, not borrow rows from neighbours.
        empty_days=frozenset({days.start + timedelta(days=4)}),
    )
    with (
        isolated_pipeline(local_gcp, gcs_client, bq_client, sandbox) as pipeline,
        BigQueryProxy(local_gcp.bigquery_endpoint) as bigquery,
        RecordingServer() as alerts,
    ):
        dagster_home = tmp_path_factory.mktemp("dagster-home")
        env = pipeline.cli_env(
            dagster_home,
            HATCH_TIMEZONE="UTC",
            HATCH_FIRST_PARTITION=missing.start.isoformat(),
            HATCH_MIN_EXPORT_INTERVAL_SECONDS=str(EXPORT_INTERVAL_SECONDS),
            HATCH_EXPORT_GUARD_SECONDS=str(EXPORT_GUARD_SECONDS),
            HATCH_SCHEDULE_CRON=f"{later.minute} {later.hour} * * *",
            HATCH_FRESH_BY=later.strftime("%H:%M"),
            BIGQUERY_EMULATOR_HOST=bigquery.endpoint,
            HATCH_ALERT_WEBHOOK=alerts.url,
        )
        with postgres_server() as postgres:
            env = {**env, **postgres.env()}
            use_production_instance(dagster_home)
            # The catch-up sensor would land the whole partition set by itself the moment the daemon starts.
            stop_before_the_daemon_starts(SENSOR_NAME, env, dagster_home)
            with running_deployment(env, dagster_home, deployed_environment()) as webserver:
                yield Deployment(webserver, pipeline, days, missing, bigquery, alerts, env, later)

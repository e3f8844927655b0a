"""The promises "a concurrency pool of one guards the API" and "a pool per table keeps BigQuery loads of one
table apart", checked the way Dagster enforces them.

`dg.materialize()` runs on an ephemeral instance that ignores pools, so these tests launch the project's own daily
job with `execute_job(reconstructable(...))` on a test instance configured like the project's dagster.yaml. The
multiprocess executor runs each step in its own (spawned) process, which rebuilds the Definitions from the HATCH_*
variables the test sets. The sandbox answers slowly, so two raw steps running at the same time overlap in the run's
event log; the same run with a pool limit of two is the control that shows they would. The BigQuery loads run in
separate runs (a backfill's range runs, or the daily run beside one) and reach the emulator through a proxy that
holds their transactions, so a test sees which loads are in BigQuery together.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import dagster as dg
import pytest
from dagster_shared.yaml_utils import safe_load_yaml
from google.cloud.storage import Client as StorageClient

from hatch_pipeline.contract import DATA_SOURCES, DataSource
from hatch_pipeline.defs.constants import DAILY_JOB_NAME, bigquery_key, bigquery_pool, parquet_key, raw_key
from hatch_pipeline.local.processes import venv_executable
from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY
from hatch_pipeline.local.sandbox.server import Fault, SandboxServer
from hatch_pipeline_tests.support.bigquery_proxy import BigQueryProxy
from hatch_pipeline_tests.support.gcp_fixtures import LocalGcp
from hatch_pipeline_tests.support.pipeline_fixtures import Pipeline, keys_of

PROJECT_INSTANCE_CONFIG: Final = Path(__file__).resolve().parents[2] / "dagster.yaml"
YESTERDAY: Final = datetime.now(UTC).date() - timedelta(days=1)
DAY_BEFORE: Final = YESTERDAY - timedelta(days=1)
RAW_KEYS: Final = [raw_key(source) for source in DATA_SOURCES]
RAW_STEPS: Final = {key.to_python_identifier() for key in RAW_KEYS}
SLOW_EXPORT_SECONDS: Final = 1.5
"""Each export answers this late, so two raw steps running together stay open long enough to overlap."""

START, SUCCESS = dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS


def hatch_daily_job() -> dg.JobDefinition:
    """The reconstructable target: the project's daily job exactly as `dagster dev` loads it.

    The definitions are lazy: every step process builds them afresh, from the HATCH_* variables the test pointed at
    its sandbox and emulators.
    """
    from hatch_pipeline import definitions

    return definitions.defs().resolve_job_def(DAILY_JOB_NAME)


@pytest.fixture
def project_env(
    sandbox: SandboxServer, gcp_emulator_env: LocalGcp, gcs_client: StorageClient, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SandboxServer]:
    """The environment a deployment would set, pointed at this test's sandbox, a fresh bucket and the emulators."""
    bucket = gcs_client.create_bucket(f"hatch-pool-{uuid.uuid4().hex[:12]}").name
    for name, value in {
        "HATCH_API_KEY": DEFAULT_API_KEY,
        "HATCH_API_BASE_URL": sandbox.base_url,
        "HATCH_GCS_BUCKET": bucket,
        "HATCH_BQ_PROJECT": gcp_emulator_env.project,
        # Short, so the rate ledger does not put the two exports in single file by itself: only the pool may.
        "HATCH_MIN_EXPORT_INTERVAL_SECONDS": "0.01",
    }.items():
        monkeypatch.setenv(name, value)
    sandbox.inject(*[Fault(slow=SLOW_EXPORT_SECONDS) for _ in RAW_KEYS])
    yield sandbox


def project_concurrency(default_limit: int | None = None) -> dict[str, Any]:
    """The `concurrency` section of the project's dagster.yaml (read with Dagster's own YAML loader), optionally with
    another default pool limit."""
    concurrency = safe_load_yaml(PROJECT_INSTANCE_CONFIG.read_text())["concurrency"]
    if default_limit is not None:
        concurrency["pools"]["default_limit"] = default_limit
    return {"concurrency": concurrency}


def raw_step_events(instance_overrides: dict[str, Any]) -> list[tuple[str, dg.DagsterEventType]]:
    """Materialize yesterday's raw assets in one run; return their steps' starts and successes in log order.

    The run's event log is one SQLite file that every step process appends to, so its order is the order in which
    the steps really started and finished.
    """
    with dg.instance_for_test(overrides=instance_overrides) as instance:
        result = dg.execute_job(
            dg.reconstructable(hatch_daily_job),
            instance,
            asset_selection=RAW_KEYS,
            tags={"dagster/partition": YESTERDAY.isoformat()},
        )
        assert result.success, [str(event) for event in result.all_events if event.is_failure]
        records = instance.all_logs(result.run_id, of_type={START, SUCCESS})
    events = [
        (record.step_key, record.dagster_event.event_type)
        for record in records
        if record.step_key is not None and record.dagster_event is not None
    ]
    assert {step for step, _ in events} == RAW_STEPS
    return events


def assert_both_exported(sandbox: SandboxServer) -> None:
    exports = sorted((record.data_source, record.start_date, record.status) for record in sandbox.access_log)
    assert exports == [(source, YESTERDAY.isoformat(), 200) for source in DATA_SOURCES]


def test_the_raw_assets_share_the_export_api_pool_and_each_table_has_its_own() -> None:
    from hatch_pipeline.definitions import defs

    keys = [make(source) for make in (raw_key, parquet_key, bigquery_key) for source in DATA_SOURCES]

    pools = {key.to_user_string(): defs().resolve_assets_def(key).op.pool for key in keys}

    assert {key: pool for key, pool in pools.items() if pool is not None} == {
        "hatch/raw/contact_history": "hatch_export_api",
        "hatch/raw/conversation_items": "hatch_export_api",
        "hatch/bigquery/contact_history": "hatch_bigquery_contact_history",
        "hatch/bigquery/conversation_items": "hatch_bigquery_conversation_items",
    }


def test_with_the_project_instance_config_the_raw_exports_run_one_after_the_other(
    project_env: SandboxServer,
) -> None:
    events = raw_step_events(project_concurrency())

    assert [event_type for _, event_type in events] == [START, SUCCESS, START, SUCCESS], events
    assert events[0][0] == events[1][0] != events[2][0] == events[3][0], events
    assert_both_exported(project_env)


def test_with_a_pool_limit_of_two_the_raw_exports_overlap(project_env: SandboxServer) -> None:
    """The control: the same run with room for two steps overlaps, so the test above can fail."""
    events = raw_step_events(project_concurrency(default_limit=2))

    assert [event_type for _, event_type in events] == [START, START, SUCCESS, SUCCESS], events
    assert_both_exported(project_env)


@pytest.fixture
def landed(pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BigQueryProxy]:
    """Two days of raw exports and Parquet of both sources; the step processes reach BigQuery through the proxy."""
    pipeline.materialize(DAY_BEFORE, YESTERDAY, keys_of("raw", "parquet"))
    with BigQueryProxy(pipeline.local_gcp.bigquery_endpoint) as proxy:
        environment = pipeline.cli_env(tmp_path / "dagster_home", BIGQUERY_EMULATOR_HOST=proxy.endpoint)
        for name, value in environment.items():
            if name.startswith("HATCH_") or name.endswith("_EMULATOR_HOST"):
                monkeypatch.setenv(name, value)
        yield proxy


def start_load(source: DataSource, day: date) -> subprocess.Popen[bytes]:
    """Materialize `source`'s BigQuery asset alone for `day` with Dagster's CLI, in a run of its own as a backfill's
    range runs are, on the test instance (DAGSTER_HOME). A process each: Dagster's runs cannot share one process
    (two `execute_job` threads deadlock in `logging.config.dictConfig`, which every run calls)."""
    return subprocess.Popen(
        [
            str(venv_executable("dagster")),
            *("asset", "materialize", "-m", "hatch_pipeline.definitions"),
            *("--select", bigquery_key(source).to_user_string(), "--partition", day.isoformat()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def finish(load: subprocess.Popen[bytes]) -> None:
    output, _ = load.communicate(timeout=600)
    assert load.returncode == 0, output.decode()[-3000:]


def run_of(instance: dg.DagsterInstance, source: DataSource, day: date) -> str:
    """The id of the run that loaded `source` for `day`."""
    [run_id] = [
        run.run_id
        for run in instance.get_runs()
        if run.asset_selection == {bigquery_key(source)} and run.tags.get("dagster/partition") == day.isoformat()
    ]
    return run_id


def wait_until_a_step_waits_for(instance: dg.DagsterInstance, pool: str, timeout: float = 180.0) -> None:
    """Wait until some run logs that a step waits for a slot of `pool` (Dagster's "Step blocked by limit")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in instance.get_runs():
            for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
                if record.message == f"Step blocked by limit for pool {pool}":
                    return
        time.sleep(0.2)
    raise AssertionError(f"no step waited for pool {pool} within {timeout} s")


def load_events_in_order(
    instance: dg.DagsterInstance, run_ids: list[str], source: DataSource
) -> list[tuple[str, dg.DagsterEventType]]:
    """The starts and successes of `source`'s BigQuery steps in several runs (the asset's checks run in steps of
    their own), ordered by when they happened."""
    step = bigquery_key(source).to_python_identifier()
    records = [record for run_id in run_ids for record in instance.all_logs(run_id, of_type={START, SUCCESS})]
    return [
        (record.run_id, record.dagster_event.event_type)
        for record in sorted(records, key=lambda record: record.timestamp)
        if record.dagster_event is not None and record.step_key == step
    ]


def test_loads_of_one_table_wait_for_each_other_while_the_other_table_loads_beside_them(
    landed: BigQueryProxy,
) -> None:
    """Three runs, as a backfill's range runs and the daily run make them: two load contact_history (one day each),
    one conversation_items."""
    with dg.instance_for_test(overrides=project_concurrency()) as instance:
        with landed.holding_transactions():
            first = start_load("contact_history", DAY_BEFORE)
            beside = start_load("conversation_items", YESTERDAY)
            landed.wait_for_in_flight(2)  # the two tables' loads are in BigQuery together: their pools are separate
            second = start_load("contact_history", YESTERDAY)
            wait_until_a_step_waits_for(instance, bigquery_pool("contact_history"))
            assert len(landed.transactions) == 2, "a second load of contact_history reached BigQuery beside the first"
        for load in (first, beside, second):
            finish(load)
        runs = [run_of(instance, "contact_history", DAY_BEFORE), run_of(instance, "contact_history", YESTERDAY)]

        events = load_events_in_order(instance, runs, "contact_history")

    assert events == [(runs[0], START), (runs[0], SUCCESS), (runs[1], START), (runs[1], SUCCESS)]
    tables = [transaction.table.rsplit(".", 1)[-1] for transaction in landed.transactions]
    assert sorted(tables) == ["contact_history", "contact_history", "conversation_items"]

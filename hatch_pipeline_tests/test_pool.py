"""The promise "a concurrency pool of one guards the API", checked the way Dagster enforces it.

`dg.materialize()` runs on an ephemeral instance that ignores pools, so these tests launch the project's own daily
job with `execute_job(reconstructable(...))` on a test instance configured like the project's dagster.yaml. The
multiprocess executor runs each step in its own (spawned) process, which rebuilds the Definitions from the HATCH_*
variables the test sets. The sandbox answers slowly, so two raw steps running at the same time overlap in the run's
event log; the same run with a pool limit of two is the control that shows they would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import dagster as dg
import pytest
from dagster_shared.yaml_utils import safe_load_yaml
from google.cloud.storage import Client as StorageClient

from hatch_pipeline.contract import DATA_SOURCES
from hatch_pipeline.defs.assets import bigquery_key, parquet_key, raw_key
from hatch_pipeline.defs.automation import DAILY_JOB_NAME
from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY
from hatch_pipeline.local.sandbox.server import Fault, SandboxServer
from hatch_pipeline_tests.gcp_fixtures import LocalGcp

PROJECT_INSTANCE_CONFIG: Final = Path(__file__).resolve().parents[1] / "dagster.yaml"
YESTERDAY: Final = datetime.now(UTC).date() - timedelta(days=1)
RAW_KEYS: Final = [raw_key(source) for source in DATA_SOURCES]
RAW_STEPS: Final = {key.to_python_identifier() for key in RAW_KEYS}
SLOW_EXPORT_SECONDS: Final = 1.5
"""Each export answers this late, so two raw steps running together stay open long enough to overlap."""

START, SUCCESS = dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS


def hatch_daily_job() -> dg.JobDefinition:
    """The reconstructable target: the project's daily job exactly as `dagster dev` loads it.

    Imported here, not at the top, because hatch_pipeline.local.definitions reads the environment once at import: every
    step process imports it afresh, with the HATCH_* variables the test pointed at its sandbox and emulators.
    """
    from hatch_pipeline.local import definitions

    return definitions.defs.resolve_job_def(DAILY_JOB_NAME)


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


def test_only_the_raw_assets_are_in_the_export_api_pool() -> None:
    from hatch_pipeline.definitions import defs

    keys = [make(source) for make in (raw_key, parquet_key, bigquery_key) for source in DATA_SOURCES]

    pools = {key.to_user_string(): defs.resolve_assets_def(key).op.pool for key in keys}

    assert {key: pool for key, pool in pools.items() if pool is not None} == {
        "hatch/raw/contact_history": "hatch_export_api",
        "hatch/raw/conversation_items": "hatch_export_api",
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

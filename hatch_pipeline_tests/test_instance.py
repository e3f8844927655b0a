"""The project's dagster.yaml as Dagster reads it: every section passes Dagster's own schema, and run monitoring
gives back the pool slot of a run whose worker was killed (before, such a run held `hatch_export_api` for good)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, Final

import dagster as dg
import pytest
from dagster._core.instance.config import PoolGranularity
from dagster._core.test_utils import freeze_time
from dagster._daemon.monitoring import execute_concurrency_slots_iteration
from dagster._time import get_current_datetime
from dagster_shared.yaml_utils import safe_load_yaml

from hatch_pipeline.defs.constants import API_POOL
from hatch_pipeline.local.demo import PROJECT_ROOT
from hatch_pipeline_tests.support import killed_worker

FREE_SLOTS_AFTER: Final = "free_slots_after_run_end_seconds"


def project_instance_settings() -> dict[str, Any]:
    """The project's dagster.yaml, read with Dagster's own YAML loader."""
    settings: dict[str, Any] = safe_load_yaml((PROJECT_ROOT / "dagster.yaml").read_text())
    return settings


@pytest.fixture
def project_instance() -> Iterator[dg.DagsterInstance]:
    """A persistent instance (SQLite in a temporary DAGSTER_HOME) made from the project's dagster.yaml."""
    with dg.instance_for_test(overrides=project_instance_settings()) as instance:
        yield instance


def test_dagster_accepts_the_project_instance_settings(project_instance: dg.DagsterInstance) -> None:
    pools = project_instance.get_concurrency_config().pool_config

    assert (pools.default_pool_limit, pools.pool_granularity) == (1, PoolGranularity.OP)
    assert project_instance.run_retries_enabled
    assert project_instance.run_retries_max_retries == 2
    assert not project_instance.run_retries_retry_on_asset_or_op_failure
    assert project_instance.run_monitoring_enabled
    assert project_instance.run_monitoring_settings[FREE_SLOTS_AFTER] > 0
    # What `dagster-daemon run` starts for these settings: run retries and run monitoring have daemons of their own.
    assert {"EVENT_LOG_CONSUMER", "MONITORING"} <= set(project_instance.get_required_daemon_types())


def test_a_misspelt_instance_setting_is_refused() -> None:
    """The control: Dagster checks these sections, so the test above fails on a setting it does not know."""
    settings = project_instance_settings()
    settings["run_monitoring"]["free_slots_after_run_seconds"] = settings["run_monitoring"].pop(FREE_SLOTS_AFTER)

    with (
        pytest.raises(dg.DagsterInvalidConfigError, match="free_slots_after_run_seconds"),
        dg.instance_for_test(overrides=settings),
    ):
        pass


def test_run_monitoring_gives_back_the_pool_slot_of_a_killed_run(project_instance: dg.DagsterInstance) -> None:
    assert killed_worker.POOL == API_POOL
    worker = subprocess.run(  # DAGSTER_HOME names the test instance's folder
        [sys.executable, "-m", killed_worker.__name__], capture_output=True, timeout=300
    )
    assert worker.returncode == -signal.SIGKILL, worker.stderr.decode()
    [run] = project_instance.get_runs()
    assert run.status == dg.DagsterRunStatus.STARTED
    assert claimed_by(project_instance) == [run.run_id]

    # What the code server does on finding the run's process gone (and the UI's "Terminate" on a run without one).
    project_instance.report_run_failed(run)
    assert claimed_by(project_instance) == [run.run_id], "a finished run keeps its slot until monitoring frees it"

    monitoring_tick(project_instance)
    assert claimed_by(project_instance) == [run.run_id], "slots are given back only after the configured delay"

    delay = project_instance.run_monitoring_settings[FREE_SLOTS_AFTER]
    with freeze_time(get_current_datetime() + timedelta(seconds=delay + 1)):
        monitoring_tick(project_instance)
    assert claimed_by(project_instance) == []


def claimed_by(instance: dg.DagsterInstance) -> list[str | None]:
    """The runs holding slots of the API pool."""
    return [slot.run_id for slot in instance.event_log_storage.get_concurrency_info(API_POOL).claimed_slots]


def monitoring_tick(instance: dg.DagsterInstance) -> None:
    """One pass of the monitoring daemon's slot check, as `dagster-daemon` runs it every poll_interval_seconds.
    It reads nothing but the instance from its workspace context."""
    context: Any = SimpleNamespace(instance=instance)
    list(execute_concurrency_slots_iteration(context, dg.get_dagster_logger()))

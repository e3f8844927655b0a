"""The fault matrix's run: both sources of one range run exporting at the same time, with the ledger's writes
optionally slowed down, launched the way Dagster runs a job (multiprocess executor, a step per process).

`dg.materialize()` runs steps one after the other, so its two raw steps never send together. Here the project's
assets run as a reconstructable job on the multiprocess executor, on an instance whose pools let both raw steps run
at once: two senders that share nothing but the rate ledger, as two machines would. Step processes fork from a
server that imported this module once (forkserver), so a step starts without importing Dagster and the project
afresh. Everything a case varies travels in the run config, since the forkserver keeps the environment it started
with (STORAGE_EMULATOR_HOST included, which names the session's one emulator).

`python -m hatch_pipeline_tests.support.fault_matrix CONFIG START END` runs the same job, all steps in one process, on
the instance in DAGSTER_HOME: one deployment among several sharing a bucket and a key.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final, TypeVar

import dagster as dg
from pydantic import Field

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.defs.assets import build_source_assets
from hatch_pipeline.defs.checks import build_source_checks
from hatch_pipeline.defs.partitions import daily_partitions, range_tags
from hatch_pipeline.defs.resources import HatchBigQueryResource, HatchExportResource, HatchStorageResource
from hatch_pipeline.export_api.ledger import LedgerState, LedgerStore
from hatch_pipeline.settings import Settings
from hatch_pipeline_tests.support.pipeline_fixtures import SOURCES, Pipeline, keys_of

T = TypeVar("T")

JOB_NAME: Final = "fault_matrix"
MATRIX_INSTANCE: Final = {
    "concurrency": {"pools": {"default_limit": 2, "granularity": "op"}},
    "compute_logs": {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"},
}
"""Instance settings: the export pool admits both raw steps, so only the rate ledger keeps them apart; steps'
stdout and stderr are not captured to files (each capture starts `tail` processes, seconds on a busy machine)."""


class SlowLedgerWrites:
    """A fault injected into a real ledger store: every write leaves `delay_seconds` after its change was
    computed, as a slow GCS upload would, so an admission's update can outlast the gap it moved its slot by.
    Reads, and updates that change nothing, are not slowed."""

    def __init__(self, store: LedgerStore, delay_seconds: float) -> None:
        self._store = store
        self.delay_seconds = delay_seconds

    def __repr__(self) -> str:
        return f"SlowLedgerWrites({self._store!r}, delay_seconds={self.delay_seconds})"

    def update(self, organization: str, change: Callable[[LedgerState], tuple[LedgerState, T]]) -> T:
        def slowly(state: LedgerState) -> tuple[LedgerState, T]:
            new_state, result = change(state)
            if new_state != state:
                time.sleep(self.delay_seconds)
            return new_state, result

        return self._store.update(organization, slowly)

    def read(self, organization: str) -> LedgerState:
        return self._store.read(organization)


class SlowLedgerExportResource(HatchExportResource):
    """The export resource with its ledger store wrapped in SlowLedgerWrites: a test resource overriding the hook
    that builds the store, so production code knows nothing of it."""

    ledger_write_delay_seconds: float = Field(default=0.0, description="Added to every ledger write; 0: none.")

    def _ledger_store(self) -> LedgerStore:
        store = super()._ledger_store()
        return SlowLedgerWrites(store, self.ledger_write_delay_seconds) if self.ledger_write_delay_seconds else store


def fault_matrix_job() -> dg.JobDefinition:
    """The reconstructable target: the six assets and their checks, resources configured at launch."""
    settings = Settings()
    partitions = daily_partitions(settings)
    assets = [
        asset
        for source in SOURCES
        for asset in build_source_assets(source, partitions, date_column=settings.date_column(source))
    ]
    checks = [check for source in SOURCES for check in build_source_checks(source, settings)]
    defs = dg.Definitions(
        assets=[*assets, *checks],
        jobs=[dg.define_asset_job(JOB_NAME, executor_def=dg.multi_or_in_process_executor)],
        resources={
            "hatch_api": SlowLedgerExportResource.configure_at_launch(),
            "hatch_storage": HatchStorageResource.configure_at_launch(),
            "hatch_bigquery": HatchBigQueryResource.configure_at_launch(),
        },
    )
    return defs.resolve_job_def(JOB_NAME)


def run_config(pipeline: Pipeline, *, ledger_write_delay_seconds: float, in_process: bool) -> dict[str, Any]:
    """The pipeline's resources as run config; the steps run in this process, or in processes forked from a
    server that preloaded this module."""
    config: dict[str, dict[str, Any]] = {}
    for name, resource in pipeline.resources().items():
        assert isinstance(resource, dg.ConfigurableResource), f"{name} is not a configurable resource"
        config[name] = resource.model_dump(exclude_unset=True)
    config["hatch_api"]["ledger_write_delay_seconds"] = ledger_write_delay_seconds
    forked = {"multiprocess": {"start_method": {"forkserver": {"preload_modules": [__name__]}}}}
    return {
        "resources": {name: {"config": values} for name, values in config.items()},
        "execution": {"config": {"in_process": {}} if in_process else forked},
    }


@dataclass(frozen=True)
class TimedRun:
    success: bool
    wall_seconds: float
    failures: list[str]


def export_both_sources(
    pipeline: Pipeline, window: ExportWindow, *, stalled_after_seconds: float, ledger_write_delay_seconds: float
) -> TimedRun:
    """One range run of both raw assets, each step in its own process, on a fresh instance, its wall time measured.

    A run still going after `stalled_after_seconds` is stalled: its step processes are killed, so the test fails
    now rather than at the 30-minute lapse of the claim it waits for.
    """
    with dg.instance_for_test(overrides=MATRIX_INSTANCE) as instance, _killed_after(stalled_after_seconds):
        started = time.monotonic()
        result = dg.execute_job(
            dg.reconstructable(fault_matrix_job),
            instance,
            run_config=run_config(pipeline, ledger_write_delay_seconds=ledger_write_delay_seconds, in_process=False),
            tags=range_tags(window),
            asset_selection=keys_of("raw"),
        )
        wall = time.monotonic() - started
        failures = [str(event.event_specific_data) for event in result.all_events if event.is_failure]
    return TimedRun(result.success, wall, failures)


def run_command(config_file: Path, window: ExportWindow) -> list[str]:
    """A whole range run (raw to BigQuery, in one process) on the instance in DAGSTER_HOME: `python -m` this
    module, as a run worker of another deployment would run it."""
    return [sys.executable, "-m", __name__, str(config_file), window.start.isoformat(), window.end.isoformat()]


@contextmanager
def _killed_after(seconds: float) -> Iterator[None]:
    """Kill this process's children (the run's step processes, by their ids) if the block outlasts `seconds`."""
    done = threading.Event()

    def watch() -> None:
        if not done.wait(seconds):
            for child in multiprocessing.active_children():
                child.kill()

    watchdog = threading.Thread(target=watch, name="fault-matrix-watchdog", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        done.set()
        watchdog.join()


if __name__ == "__main__":
    config_path, first, last = sys.argv[1:]
    with dg.DagsterInstance.get() as home:  # DAGSTER_HOME names the run's own instance
        outcome = dg.execute_job(
            dg.reconstructable(fault_matrix_job),
            home,
            run_config=json.loads(Path(config_path).read_text()),
            tags=range_tags(ExportWindow(date.fromisoformat(first), date.fromisoformat(last))),
        )
    sys.exit(0 if outcome.success else 1)

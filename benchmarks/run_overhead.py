"""What a run spends starting processes, beside what its steps spend working: spawn, forkserver, in-process.

The claim: a range run's wait is its steps' work, not process start-up. Each variant materializes the project's six
assets and their checks (`hatch_pipeline.definitions`, as a deployment loads them; twelve steps) for one range of
DAYS days as ONE run, with `execute_job` in a fresh process (a run worker, as the run launcher starts one), on an
instance configured by the project's dagster.yaml (pools included), against the sandbox API and the local
emulators, into a fresh bucket and dataset per run. Only the job's executor differs (modules are compiled to
bytecode at install, as `make install` and the Dockerfile do):
- spawn: Dagster's multiprocess executor as it comes (each step a fresh interpreter that imports Dagster, polars,
  pyarrow and the Google clients, then loads the code location);
- forkserver: the same executor starting steps from a server that imported the project once (`preload_modules`):
  what the project's definitions set (`hatch_pipeline.defs.executor`);
- in-process: every step in the run worker itself, one after another (no step isolation, no parallel steps).
From the run's event log: `work` is the sum over steps of STEP_START to STEP_SUCCESS (the steps' own time), `start-up`
the sum over steps of their launch to STEP_START (zero in-process), `run` the run's start to its success, and
`worker` the run worker's life from its launch to its exit. `start-up / work` is the issue's ratio (target <= 1).
Rounds alternate the variants (`--repeat`); figures are medians, `x spawn` the median of each round's ratio
of spawn's worker time to this variant's (above 1 is faster).

    .venv/bin/python -m benchmarks.run_overhead [--days 14] [--rows-per-day 2000 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import dagster as dg

from benchmarks import format_table
from benchmarks.local_servers import LocalServers, local_servers
from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.defs.constants import GROUP
from hatch_pipeline.defs.executor import STEP_EXECUTOR
from hatch_pipeline.defs.partitions import range_tags
from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY

PROJECT: Final = "hatch-bench"
PROJECT_ROOT: Final = Path(__file__).resolve().parents[1]
RESULTS: Final = Path(__file__).with_name("results.json")
VARIANTS: Final = {
    "spawn": dg.multiprocess_executor,
    "forkserver": STEP_EXECUTOR,
    "in-process": dg.in_process_executor,
}
JOB_NAME: Final = "run_overhead"
_HEADER: Final = ("executor", "worker s", "run s", "work s", "start-up s", "start-up / work", "x spawn")
_STEP_EVENTS: Final = {
    dg.DagsterEventType.STEP_WORKER_STARTING,
    dg.DagsterEventType.STEP_START,
    dg.DagsterEventType.STEP_SUCCESS,
}
_RUN_EVENTS: Final = {dg.DagsterEventType.RUN_START, dg.DagsterEventType.RUN_SUCCESS}


@dataclasses.dataclass(frozen=True)
class RunTimes:
    """One run of one variant, in seconds."""

    variant: str
    worker: float
    run: float
    work: float
    startup: float


def job_with_executor(variant: str) -> dg.JobDefinition:
    """The reconstructable target: the project's assets as the deployment loads them, in a job on `variant`."""
    from hatch_pipeline import definitions

    project = definitions.defs()
    job = dg.define_asset_job(JOB_NAME, selection=dg.AssetSelection.groups(GROUP), executor_def=VARIANTS[variant])
    return dg.Definitions(
        assets=project.assets, asset_checks=project.asset_checks, resources=project.resources, jobs=[job]
    ).resolve_job_def(JOB_NAME)


def run_worker(variant: str, start: str, end: str) -> None:
    """The child process: one range run on the instance DAGSTER_HOME names; prints its timings as JSON."""
    window = ExportWindow(datetime.fromisoformat(start).date(), datetime.fromisoformat(end).date())
    target = dg.build_reconstructable_job(
        "benchmarks.run_overhead", "job_with_executor", reconstructable_args=(variant,)
    )
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(target, instance, tags=range_tags(window))
        if not result.success:
            raise SystemExit(f"the {variant} run failed: {[str(e) for e in result.all_events if e.is_failure]}")
        records = instance.all_logs(result.run_id, of_type=_STEP_EVENTS | _RUN_EVENTS)
    at: dict[tuple[str | None, str], float] = {}
    for record in records:
        assert record.dagster_event is not None
        at.setdefault((record.step_key, record.dagster_event.event_type.value), record.timestamp)
    steps = {step for step, _ in at if step is not None}
    started, launched, succeeded = (
        dg.DagsterEventType.STEP_START.value,
        dg.DagsterEventType.STEP_WORKER_STARTING.value,
        dg.DagsterEventType.STEP_SUCCESS.value,
    )
    times = {
        "run": at[(None, dg.DagsterEventType.RUN_SUCCESS.value)] - at[(None, dg.DagsterEventType.RUN_START.value)],
        "work": sum(at[(step, succeeded)] - at[(step, started)] for step in steps),
        "startup": sum(at[(step, started)] - at.get((step, launched), at[(step, started)]) for step in steps),
    }
    print(json.dumps(times))


def measure(variant: str, env: dict[str, str], window: ExportWindow) -> RunTimes:
    began = time.perf_counter()
    arguments = ["--run-worker", variant, window.start.isoformat(), window.end.isoformat()]
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_overhead", *arguments],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    worker = time.perf_counter() - began
    if child.returncode != 0:
        raise SystemExit(f"{variant}: {child.stderr[-4000:]}")
    times = json.loads(child.stdout.strip().splitlines()[-1])
    return RunTimes(variant, worker, times["run"], times["work"], times["startup"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--rows-per-day", type=int, nargs="+", default=[2000, 20000], help="sizes to run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--run-worker", nargs=3, metavar=("VARIANT", "START", "END"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_worker:
        run_worker(*args.run_worker)
        return
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    window = ExportWindow(yesterday - timedelta(days=args.days - 1), yesterday)

    runs: dict[int, list[RunTimes]] = {rows: [] for rows in args.rows_per_day}
    with local_servers(PROJECT, "hatch-bench-overhead-") as servers:
        sandbox, storage, bigquery = servers.sandbox, servers.storage, servers.bigquery
        for rows, measured in runs.items():
            sandbox.config = dataclasses.replace(sandbox.config, rows_per_day=rows, min_export_interval_seconds=0)
            for _ in range(args.repeat):
                for variant in args.variants:
                    suffix = uuid.uuid4().hex[:10]
                    bucket = storage.create_bucket(f"bench-{suffix}").name
                    bigquery.create_dataset(f"bench_{suffix}")
                    home = servers.scratch / f"home-{suffix}"
                    home.mkdir()
                    (home / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
                    env = _environment(home, bucket, f"bench_{suffix}", servers)
                    measured.append(measure(variant, env, window))

    for rows, measured in runs.items():
        print(f"\nA {args.days}-day range run of the six hatch assets and their checks, {rows} rows/day per source.\n")
        print(format_table(_HEADER, _table(measured, args.variants)))
    document: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    figures = {str(rows): [dataclasses.asdict(run) for run in measured] for rows, measured in runs.items()}
    RESULTS.write_text(json.dumps(document | {"run_overhead": figures}, indent=1) + "\n")


def _environment(home: Path, bucket: str, dataset: str, servers: LocalServers) -> dict[str, str]:
    """A deployment's settings (HATCH_*), pointed at the sandbox and the emulators, with no spacing to wait for."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("HATCH_")}
    return {
        **inherited,
        "DAGSTER_HOME": str(home),
        "HATCH_API_KEY": DEFAULT_API_KEY,
        "HATCH_API_BASE_URL": servers.sandbox.base_url,
        "HATCH_GCS_BUCKET": bucket,
        "HATCH_BQ_PROJECT": PROJECT,
        "HATCH_BQ_DATASET": dataset,
        "HATCH_TIMEZONE": "UTC",
        "HATCH_MIN_EXPORT_INTERVAL_SECONDS": "0",
        "STORAGE_EMULATOR_HOST": servers.gcs_endpoint,
        "BIGQUERY_EMULATOR_HOST": servers.bigquery_endpoint,
    }


def _table(runs: Sequence[RunTimes], variants: Sequence[str]) -> list[list[object]]:
    rounds = [runs[index : index + len(variants)] for index in range(0, len(runs), len(variants))]
    baseline = variants.index("spawn") if "spawn" in variants else None
    rows: list[list[object]] = []
    for position, variant in enumerate(variants):
        mine = [round_[position] for round_ in rounds]
        ratio = (
            statistics.median(round_[baseline].worker / run.worker for round_, run in zip(rounds, mine, strict=True))
            if baseline is not None
            else float("nan")
        )
        rows.append(
            [
                variant,
                f"{statistics.median(run.worker for run in mine):.1f}",
                f"{statistics.median(run.run for run in mine):.1f}",
                f"{statistics.median(run.work for run in mine):.1f}",
                f"{statistics.median(run.startup for run in mine):.1f}",
                f"{statistics.median(run.startup / run.work for run in mine):.2f}",
                f"{ratio:.2f}",
            ]
        )
    return rows


if __name__ == "__main__":
    main()

"""`make demo`: the whole pipeline on this machine, with no credentials and no internet.

Starts, on loopback, the sandbox of the vendor API, a GCS emulator and a BigQuery emulator; materializes the last
days of both sources as one range run with the Dagster CLI (exactly as a user would backfill); prints what landed
and where; then serves the Dagster UI on the same instance, so the run and its metadata are there to inspect.
Everything lives in `.hatch_demo/` and starts afresh each time (the BigQuery emulator keeps nothing across runs).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

from hatch_pipeline.contract import DATA_SOURCES
from hatch_pipeline.google_clients import bigquery_client, storage_client
from hatch_pipeline.local.dagster_dev import DEFINITIONS_MODULE, dagster_dev_command
from hatch_pipeline.local.processes import venv_executable
from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY, SandboxConfig
from hatch_pipeline.local.sandbox.server import AccessRecord, SandboxServer
from hatch_pipeline.local.services import bigquery_emulator, gcs_emulator, gcs_local_root
from hatch_pipeline.warehouse import rows_by_day

DEMO_EXPORT_INTERVAL_SECONDS: Final = 1.0
"""The sandbox and the ledger use a short interval so the demo does not wait five minutes between exports."""
DEMO_EXPORT_GUARD_SECONDS: Final = 0.2
"""The default guard band (1 % of the interval) would be 10 ms here, less than a ledger write takes on a laptop."""
DEMO_PROJECT: Final = "hatch-demo"
DEMO_BUCKET: Final = "hatch-demo"
DEMO_ROWS_PER_DAY: Final = 500

PROJECT_ROOT: Final = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DemoServices:
    """The demo's running stand-ins, and the environment every Dagster command of the demo runs with."""

    home: Path
    dagster_home: Path
    env: dict[str, str]
    sandbox: SandboxServer
    bq_endpoint: str


@contextmanager
def demo_services(home: Path, *, first_partition: date, new_columns_from: date | None = None) -> Iterator[DemoServices]:
    """Start the sandbox API, both emulators and the demo's bucket afresh in `home`, with a DAGSTER_HOME holding
    the project's dagster.yaml; stop them when the block ends."""
    shutil.rmtree(home, ignore_errors=True)
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    config = SandboxConfig(
        rows_per_day=DEMO_ROWS_PER_DAY,
        min_export_interval_seconds=DEMO_EXPORT_INTERVAL_SECONDS,
        new_columns_from=new_columns_from,
    )
    with (
        SandboxServer(config) as sandbox,
        gcs_emulator(home / "gcs") as gcs_endpoint,
        bigquery_emulator(DEMO_PROJECT, gcs_data_dir=home / "gcs", home_dir=home / "bigquery-home") as bq_endpoint,
    ):
        storage_client(DEMO_PROJECT, gcs_endpoint).create_bucket(DEMO_BUCKET)
        env = {
            **os.environ,
            "DAGSTER_HOME": str(dagster_home),
            "HATCH_API_KEY": DEFAULT_API_KEY,
            "HATCH_API_BASE_URL": sandbox.base_url,
            "HATCH_MIN_EXPORT_INTERVAL_SECONDS": str(DEMO_EXPORT_INTERVAL_SECONDS),
            "HATCH_EXPORT_GUARD_SECONDS": str(DEMO_EXPORT_GUARD_SECONDS),
            "HATCH_TIMEZONE": "UTC",
            "HATCH_GCS_BUCKET": DEMO_BUCKET,
            "HATCH_BQ_PROJECT": DEMO_PROJECT,
            # The demo's partitions are the days it lands, so the catch-up sensor finds nothing missing.
            "HATCH_FIRST_PARTITION": first_partition.isoformat(),
            "STORAGE_EMULATOR_HOST": gcs_endpoint,
            "BIGQUERY_EMULATOR_HOST": bq_endpoint,
        }
        for name in ("HATCH_GCS_PREFIX", "HATCH_BQ_DATASET", "HATCH_OUTPUT_FORMAT"):
            env.pop(name, None)
        yield DemoServices(home, dagster_home, env, sandbox, bq_endpoint)


def recent_days(days: int) -> tuple[date, date]:
    """The first and last of the `days` days up to yesterday (UTC, the demo's HATCH_TIMEZONE)."""
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    return yesterday - timedelta(days=days - 1), yesterday


def run_demo(*, ui_port: int, days: int, serve_ui: bool) -> int:
    first, yesterday = recent_days(days)
    print("Starting the sandbox API and the GCS and BigQuery emulators on 127.0.0.1 ...", flush=True)
    # The vendor rolls out new contact_history columns during the demo's range: the table gains them.
    new_columns_from = yesterday - timedelta(days=2)
    with demo_services(Path.cwd() / ".hatch_demo", first_partition=first, new_columns_from=new_columns_from) as demo:
        print(f"Materializing group hatch for {first}..{yesterday} as one range run ...", flush=True)
        run_log = demo.home / "materialize.log"
        command = materialize_command(first, yesterday)
        returncode = run_reporting_progress(command, demo.env, demo.dagster_home, run_log)
        if returncode != 0:
            print(f"The demo run failed; its last lines are above, the whole log is {run_log}.", file=sys.stderr)
            return returncode
        _report(first, yesterday, demo.sandbox.access_log, demo.bq_endpoint, demo.home)
        if not serve_ui:
            return 0
        ui_log = demo.home / "dagster.log"
        print(f"\nDagster UI: http://127.0.0.1:{ui_port} (Ctrl-C stops the demo; Dagster's log: {ui_log})", flush=True)
        try:
            return serve_quietly(dagster_dev_command("127.0.0.1", ui_port), demo.env, demo.dagster_home, ui_log)
        except KeyboardInterrupt:
            return 0


_PROGRESS_LINE: Final = re.compile(
    r" - dagster - (?P<level>INFO|WARNING|ERROR|CRITICAL) - \S+ - [0-9a-f-]{36} - (?P<step>\S+) - (?P<message>.*)"
)
"""A line of Dagster's console log that a step wrote at INFO or above (the stage's own progress messages);
Dagster's DEBUG events (hundreds per run) only go to the log file."""


_PROBLEM_LINE: Final = re.compile(r" - (?:dagster|dagster\.[\w.]+) - (?:WARNING|ERROR|CRITICAL) - ")
"""A line Dagster's processes log at WARNING or above (a failed run, a sensor's error): the terminal shows these."""
_ROUTINE_WARNINGS: Final = ("No cursor for event type",)
"""Warnings Dagster logs every time on a fresh instance (the event log consumer's first start): log file only."""
_COLOUR: Final = re.compile(r"\x1b\[[0-9;]*m")


def run_logged(
    command: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path, shown: Callable[[str], str | None]
) -> int:
    """Run `command` with its whole output in `log_path`; print what `shown` makes of each line (None: nothing)."""
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            log.flush()
            text = shown(line)
            if text is not None:
                print(text, flush=True)
    return process.returncode


def serve_quietly(command: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path) -> int:
    """Run `dagster dev` with its whole output in `log_path` and only its warnings and errors on the terminal: the
    daemon's routine lines (every tick, every 30 s) and Python's beta and supersession warnings stay in the log."""
    return run_logged(command, env, cwd, log_path, lambda line: line.rstrip("\n") if is_problem(line) else None)


def is_problem(line: str) -> bool:
    plain = _COLOUR.sub("", line)
    return _PROBLEM_LINE.search(plain) is not None and not any(known in plain for known in _ROUTINE_WARNINGS)


def run_reporting_progress(command: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path) -> int:
    """Run `command`, keeping its whole output in `log_path` and printing only the steps' progress lines, so the
    terminal shows a short report. On failure the log's last lines are printed too."""
    returncode = run_logged(command, env, cwd, log_path, progress_of)
    if returncode != 0:
        print("".join(log_path.read_text().splitlines(keepends=True)[-40:]), file=sys.stderr)
    return returncode


def progress_of(line: str) -> str | None:
    progress = _PROGRESS_LINE.search(line)
    return f"  {progress['step']}: {progress['message']}" if progress and progress["step"] != "-" else None


def materialize_command(first: date, last: date, select: str = "group:hatch") -> list[str]:
    """`dagster asset materialize` of `select` for first..last as one range run, as a user backfills."""
    return [
        str(venv_executable("dagster")),
        "asset",
        "materialize",
        "-m",
        DEFINITIONS_MODULE,
        "--select",
        select,
        "--partition-range",
        f"{first.isoformat()}...{last.isoformat()}",
    ]


def _report(first: date, last: date, access_log: Sequence[AccessRecord], bq_endpoint: str, home: Path) -> None:
    from hatch_pipeline.stages.bigquery import table_spec

    client = bigquery_client(DEMO_PROJECT, "US", bq_endpoint)
    days = [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
    print(f"\nLanded {first}..{last} with {len(access_log)} export request(s) to the API:")
    for source in DATA_SOURCES:
        counts: Mapping[date, int] = rows_by_day(client, table_spec(source, DEMO_PROJECT, "hatch"), days)
        print(f"  {DEMO_PROJECT}.hatch.{source}: {sum(counts.values()):,} rows over {len(counts)} days")
    print(f"  raw ZIPs and Parquet: gs://{DEMO_BUCKET}/hatch/ (files under {gcs_local_root(home / 'gcs')})")

"""GCS calls and BigQuery jobs of the Parquet and BigQuery stages for one range run, against the number of days.

The claim: a range run costs a number of object-store round trips that grows by about one upload per day with
rows, and a number of BigQuery jobs that does not grow with the days at all. The baseline beside it is the same
days run one day per run (what a per-partition schedule or a backfill without a single-run policy does).

Everything runs locally: the sandbox API, the GCS emulator and the BigQuery emulator. Calls are counted on the
official clients' HTTP sessions (one per request, pages included); a BigQuery job is a `POST .../jobs`. Calls to
`raw/` (the stored ZIPs and their manifests, which the Parquet stage reads) are shown apart, as that layout belongs to
the raw stage.

    .venv/bin/python -m benchmarks.range_calls [--days 1 30 180] [--per-day-days 30] [--rows-per-day 20]

Writes the figures to benchmarks/results.json ("range_calls" key) as well as printing the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import requests
from google.cloud import bigquery

from benchmarks import format_table
from benchmarks.local_servers import local_servers
from hatch_pipeline.contract import DataSource, ExportWindow
from hatch_pipeline.defs.resources import HatchExportResource
from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY
from hatch_pipeline.local.sandbox.server import SandboxServer
from hatch_pipeline.stages.bigquery import load_bigquery, table_spec
from hatch_pipeline.stages.parquet import build_parquet
from hatch_pipeline.stages.raw import land_raw
from hatch_pipeline.storage.store import ObjectStore

SOURCE: Final[DataSource] = "conversation_items"
PROJECT: Final = "hatch-bench"
RESULTS: Final = Path(__file__).with_name("results.json")
_HEADER: Final = (
    "run",
    "days",
    "parquet: GCS calls",
    "of which raw/",
    "bigquery: GCS calls",
    "BigQuery calls",
    "BigQuery jobs",
    "seconds",
)


class CallCounter:
    """Counts the HTTP requests a client's session sends, by kind; thread-safe (uploads run in parallel)."""

    def __init__(self, *sessions: requests.Session) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        for session in sessions:
            session.hooks["response"].append(self._count)

    def _count(self, response: requests.Response, *_: object, **__: object) -> None:
        request = response.request
        url = request.url or ""
        with self._lock:
            self.calls["all"] += 1
            self.calls["raw"] += "raw%2F" in url or "/raw/" in url
            self.calls["jobs"] += request.method == "POST" and url.split("?")[0].endswith("/jobs")

    def take(self) -> Counter[str]:
        with self._lock:
            taken, self.calls = self.calls, Counter()
        return taken


@dataclasses.dataclass(frozen=True)
class RunCost:
    name: str
    days: int
    parquet_gcs: int
    parquet_raw: int
    bigquery_gcs: int
    bigquery_calls: int
    bigquery_jobs: int
    seconds: float


def run_range(
    days: ExportWindow, store: ObjectStore, bq: bigquery.Client, counter: CallCounter, dataset: str
) -> tuple[Counter[str], Counter[str]]:
    """One range run of the Parquet and BigQuery stages; the GCS calls each made."""
    counter.take()
    now = datetime.now(UTC)
    build_parquet(SOURCE, days, store=store, timezone="UTC", loaded_at=now, today=now.date())
    parquet = counter.take()
    load_bigquery(
        SOURCE,
        days,
        store=store,
        client=bq,
        spec=table_spec(SOURCE, PROJECT, dataset),
        location="US",
        run_id=uuid.uuid4().hex,
    )
    return parquet, counter.take()


def measure(name: str, runs: Sequence[ExportWindow], work: Callable[[ExportWindow], Counter[str]]) -> RunCost:
    started = datetime.now(UTC)
    totals: Counter[str] = Counter()
    for window in runs:
        totals += work(window)
    seconds = (datetime.now(UTC) - started).total_seconds()
    return RunCost(
        name=name,
        days=sum(window.days for window in runs),
        parquet_gcs=totals["parquet"],
        parquet_raw=totals["parquet_raw"],
        bigquery_gcs=totals["bigquery_gcs"],
        bigquery_calls=totals["bigquery_calls"],
        bigquery_jobs=totals["bigquery_jobs"],
        seconds=seconds,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, nargs="+", default=[1, 30, 180], help="range lengths to run")
    parser.add_argument("--per-day-days", type=int, default=30, help="days run one per run, for the baseline")
    parser.add_argument("--rows-per-day", type=int, default=20)
    args = parser.parse_args(argv)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    longest = ExportWindow(yesterday - timedelta(days=max(args.days) - 1), yesterday)

    with local_servers(PROJECT, "hatch-bench-calls-") as servers:
        sandbox, storage, bq = servers.sandbox, servers.storage, servers.bigquery
        sandbox.config = dataclasses.replace(sandbox.config, rows_per_day=args.rows_per_day)
        bucket = storage.create_bucket(f"bench-{uuid.uuid4().hex[:12]}").name
        store = ObjectStore(storage, bucket, "hatch")
        gcs_counter = CallCounter(storage._http)
        bq_counter = CallCounter(bq._http)
        _land(sandbox, store, longest, servers.scratch)

        def one_run(dataset: str) -> Callable[[ExportWindow], Counter[str]]:
            def work(window: ExportWindow) -> Counter[str]:
                bq_counter.take()
                parquet, gcs = run_range(window, store, bq, gcs_counter, dataset)
                bq_calls = bq_counter.take()
                return Counter(
                    parquet=parquet["all"],
                    parquet_raw=parquet["raw"],
                    bigquery_gcs=gcs["all"],
                    bigquery_calls=bq_calls["all"],
                    bigquery_jobs=bq_calls["jobs"],
                )

            return work

        costs: list[RunCost] = []
        for days in args.days:
            window = ExportWindow(yesterday - timedelta(days=days - 1), yesterday)
            costs.append(measure("one range run", [window], one_run(f"range_{days}")))
        per_day = [ExportWindow(day, day) for day in list(longest.dates())[-args.per_day_days :]]
        costs.append(measure("baseline: a run per day", per_day, one_run("per_day")))

    table = [
        [
            cost.name,
            cost.days,
            cost.parquet_gcs,
            cost.parquet_raw,
            cost.bigquery_gcs,
            cost.bigquery_calls,
            cost.bigquery_jobs,
            f"{cost.seconds:.1f}",
        ]
        for cost in costs
    ]
    print(f"Parquet + BigQuery stages of {SOURCE}, {args.rows_per_day} rows/day, local emulators.\n")
    print(format_table(_HEADER, table))
    same_days = next((cost for cost in costs if cost.days == args.per_day_days and cost.name != costs[-1].name), None)
    if same_days is not None:
        baseline = costs[-1]
        print(
            f"\n{args.per_day_days} days, one range run / a run per day: GCS calls "
            f"{same_days.parquet_gcs + same_days.bigquery_gcs}/{baseline.parquet_gcs + baseline.bigquery_gcs}, "
            f"BigQuery jobs {same_days.bigquery_jobs}/{baseline.bigquery_jobs}"
        )
    document: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps(document | {"range_calls": [dataclasses.asdict(c) for c in costs]}, indent=1) + "\n")


def _land(sandbox: SandboxServer, store: ObjectStore, days: ExportWindow, root: Path) -> None:
    """The raw stage for the longest range, once: every run below reads what it stored."""
    export = HatchExportResource(
        api_key=DEFAULT_API_KEY,
        base_url=sandbox.base_url,
        ledger_url=str(root / "ledger"),
        min_export_interval_seconds=0.01,
        max_payload_bytes=sandbox.config.max_payload_bytes,
    )
    with export.client("UTC") as client:
        land_raw(
            SOURCE,
            days,
            client=client,
            ledger=export.ledger(),
            store=store,
            max_payload_bytes=export.max_payload_bytes,
            today=days.end + timedelta(days=1),
        )


if __name__ == "__main__":
    main()

"""Spacing across pods: N sender processes sharing one rate ledger in Cloud Storage, as run pods on Kubernetes do.

The claim (README, "Running on Kubernetes"): however many processes export with one key, the vendor sees its
spacing kept and is never asked too early, because every sender admits itself through the same ledger object with
conditional writes. Each round starts N processes (spawned, each with its own storage client, ledger and HTTP client,
as pods have), releases them together, and lets each export EXPORTS_EACH one-day windows of its own through the real
`HatchExportClient` against the sandbox. The vendor's 300 s interval stands scaled down to INTERVAL_SECONDS, so a
round takes seconds. Measured where the other side measures: arrivals in the sandbox's access log.

Columns: `exports` the admissions that reached the sandbox (every one answered 200 means none was refused with a
429); `min gap / interval` and `median gap / interval` between consecutive arrivals (the claim: min >= 1);
`412 per admission` the ledger writes that met another writer's and were applied again, per admission: the price
of the contention, which grows with N while spacing holds.

    .venv/bin/python -m benchmarks.ledger_senders [--senders 2 8 32]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any, Final

from benchmarks import format_table
from hatch_pipeline.contract import DATA_SOURCES, ExportWindow
from hatch_pipeline.export_api.client import HatchExportClient
from hatch_pipeline.export_api.gcs_ledger import GcsLedgerStore
from hatch_pipeline.export_api.ledger import RateLedger, organization_key
from hatch_pipeline.google_clients import storage_client
from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY, SandboxConfig
from hatch_pipeline.local.sandbox.server import SandboxServer
from hatch_pipeline.local.services import gcs_emulator

INTERVAL_SECONDS: Final = 0.25
"""The vendor's 300 s, scaled down so that 64 exports take about 16 s."""
GUARD_SECONDS: Final = 0.05
"""The ledger's margin for jitter between its clock and the vendor's arrivals (1 % of 300 s is 3 s)."""
EXPORTS_EACH: Final = 2
_PROJECT: Final = "hatch-bench"


@dataclass(frozen=True)
class Round:
    senders: int
    exports: int
    refused: int
    gaps: list[float]
    conflicts: int
    seconds: float


def sender(base_url: str, gcs_endpoint: str, bucket: str, index: int, start: Any, results: Any, work: str) -> None:
    """One pod: its own clients, the shared key and ledger object; EXPORTS_EACH windows no other sender asks for."""
    store = GcsLedgerStore(storage_client(_PROJECT, gcs_endpoint), bucket, "hatch")
    ledger = RateLedger(
        store,
        organization=organization_key(DEFAULT_API_KEY),
        min_interval=timedelta(seconds=INTERVAL_SECONDS),
        guard=timedelta(seconds=GUARD_SECONDS),
        max_per_day=100_000,
        max_wait=timedelta(minutes=10),
    )
    source = DATA_SOURCES[index % len(DATA_SOURCES)]
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    days: list[date] = [yesterday - timedelta(days=index * EXPORTS_EACH + offset) for offset in range(EXPORTS_EACH)]
    with HatchExportClient(api_key=DEFAULT_API_KEY, base_url=base_url, ledger=ledger) as client:
        start.wait()
        for day in days:
            client.export(source, ExportWindow(day, day), Path(work))
    results.put(store.conflicts)


def run_round(senders: int, server: SandboxServer, gcs_endpoint: str, scratch: Path) -> Round:
    bucket = storage_client(_PROJECT, gcs_endpoint).create_bucket(f"senders-{senders}").name
    server.clear_access_log()
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(senders + 1), context.Queue()
    processes = [
        context.Process(
            target=sender,
            args=(server.base_url, gcs_endpoint, bucket, index, start, results, str(scratch / f"{senders}-{index}")),
        )
        for index in range(senders)
    ]
    for process in processes:
        process.start()
    start.wait()  # every sender has its clients: the round's clock starts when they all may go
    began = time.monotonic()
    conflicts = sum(results.get(timeout=600) for _ in processes)
    seconds = time.monotonic() - began
    for process in processes:
        process.join(timeout=60)
    records = server.access_log
    arrivals = sorted(record.at for record in records)
    return Round(
        senders=senders,
        exports=sum(1 for record in records if record.status == 200),
        refused=sum(1 for record in records if record.status == 429),
        gaps=[(later - earlier).total_seconds() for earlier, later in pairwise(arrivals)],
        conflicts=conflicts,
        seconds=seconds,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--senders", type=int, nargs="+", default=[2, 8, 32])
    args = parser.parse_args(argv)
    config = SandboxConfig(rows_per_day=3, min_export_interval_seconds=INTERVAL_SECONDS, max_exports_per_day=100_000)
    rounds = []
    with (
        tempfile.TemporaryDirectory(prefix="hatch-bench-senders-") as scratch,
        SandboxServer(config) as server,
        gcs_emulator(Path(scratch) / "gcs") as gcs_endpoint,
    ):
        for senders in args.senders:
            rounds.append(run_round(senders, server, gcs_endpoint, Path(scratch)))
    print(
        f"== N senders, one ledger in the GCS emulator, {EXPORTS_EACH} exports each; interval {INTERVAL_SECONDS} s "
        f"(standing for 300 s), guard {GUARD_SECONDS} s"
    )
    header = ["senders", "exports", "429s", "min gap / interval", "median gap / interval", "412 per admission", "s"]
    rows = [
        [
            found.senders,
            f"{found.exports}/{found.senders * EXPORTS_EACH}",
            found.refused,
            f"{min(found.gaps) / INTERVAL_SECONDS:.2f}",
            f"{statistics.median(found.gaps) / INTERVAL_SECONDS:.2f}",
            f"{found.conflicts / max(found.exports, 1):.2f}",
            f"{found.seconds:.1f}",
        ]
        for found in rounds
    ]
    print(format_table(header, rows))


if __name__ == "__main__":
    main()

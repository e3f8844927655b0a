"""Spacing as the vendor measures it: two processes exporting with one key, through one GCS ledger, with injected
jitter on both sides of the ledger (a process that wakes late from its slot wait, and a delay between the ledger
and the wire), never reach the sandbox closer than the interval and are never refused (429)."""

from __future__ import annotations

import dataclasses
import multiprocessing
import random
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
from google.cloud.storage import Bucket

from hatch_pipeline.contract import DataSource, ExportWindow
from hatch_pipeline.export_api.client import HatchExportClient
from hatch_pipeline.export_api.gcs_ledger import GcsLedgerStore
from hatch_pipeline.export_api.ledger import RateLedger, organization_key
from hatch_pipeline.google_clients import storage_client
from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY
from hatch_pipeline.local.sandbox.server import SandboxServer
from hatch_pipeline_tests.export_api.test_client import logged
from hatch_pipeline_tests.support.gcp_fixtures import LocalGcp

INTERVAL_SECONDS = 0.5
GUARD_SECONDS = 0.15
LATE_WAKE_UP_SECONDS = 0.4
"""Up to this much oversleep after each slot wait: far beyond the guard, so only admission can absorb it."""
WIRE_DELAY_SECONDS = 0.05
"""Up to this much between admission and the request leaving: what the guard band is for."""
EXPORTS_EACH = 4


class DelayedTransport(httpx.BaseTransport):
    """A real HTTP transport that waits a random moment before each request leaves (a mock of nothing: the
    request still goes to the sandbox over a real connection)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        time.sleep(random.uniform(0, WIRE_DELAY_SECONDS))
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def oversleep(seconds: float) -> None:
    time.sleep(seconds + random.uniform(0, LATE_WAKE_UP_SECONDS))


def export_in_child(base_url: str, endpoint: str, bucket: str, source: DataSource, start: Any, work: str) -> None:
    """Runs in a spawned process: its own storage client, ledger and HTTP client, the same key and ledger object."""
    ledger = RateLedger(
        GcsLedgerStore(storage_client("test", endpoint), bucket, "hatch"),
        organization=organization_key(DEFAULT_API_KEY),
        min_interval=timedelta(seconds=INTERVAL_SECONDS),
        guard=timedelta(seconds=GUARD_SECONDS),
        max_per_day=1000,
        max_wait=timedelta(minutes=1),
        sleep=oversleep,
    )
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    with HatchExportClient(
        api_key=DEFAULT_API_KEY, base_url=base_url, ledger=ledger, transport=DelayedTransport(), sleep=oversleep
    ) as client:
        start.wait()
        for offset in range(EXPORTS_EACH):
            day = yesterday - timedelta(days=offset)
            client.export(source, ExportWindow(day, day), Path(work))


def test_two_processes_with_jitter_never_reach_the_vendor_closer_than_the_interval(
    sandbox: SandboxServer, local_gcp: LocalGcp, gcs_bucket: Bucket, tmp_path: Path
) -> None:
    sandbox.config = dataclasses.replace(sandbox.config, min_export_interval_seconds=INTERVAL_SECONDS, rows_per_day=3)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    children = [
        context.Process(
            target=export_in_child,
            args=(sandbox.base_url, local_gcp.gcs_endpoint, gcs_bucket.name, source, start, str(tmp_path / source)),
        )
        for source in ("contact_history", "conversation_items")
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0]

    records = logged(sandbox, 2 * EXPORTS_EACH)
    assert [record.status for record in records] == [200] * 2 * EXPORTS_EACH, f"no request refused: {records}"
    arrivals = sorted(record.at for record in records)
    gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(arrivals)]
    assert min(gaps) >= INTERVAL_SECONDS, gaps

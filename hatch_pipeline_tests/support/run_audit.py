"""What a run promises under faults, checked from what a user can inspect: the vendor's access log (the sandbox's),
the rate ledger object in the bucket, the BigQuery tables and the run's wall time.

Shared by the fault matrix (test_fault_matrix.py); each check names what it found, so a failing case tells its story.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise

from google.cloud.storage import Client as StorageClient

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.export_api.gcs_ledger import GcsLedgerStore
from hatch_pipeline.export_api.ledger import LedgerState, organization_key
from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY
from hatch_pipeline.local.sandbox.server import AccessRecord, Fault
from hatch_pipeline_tests.support.pipeline_fixtures import ROWS_PER_DAY, SOURCES, Pipeline

STARTUP_ALLOWANCE_SECONDS = 30.0
"""Wall time a run may take beyond its requests: step processes starting and loading on a busy 2-core machine."""
PER_REQUEST_ALLOWANCE_SECONDS = 2.0
"""Beyond the spacing, per request: storing its ZIP, the ledger's writes (slowed ones included), retry backoff."""


@dataclass(frozen=True)
class Audit:
    """Everything the checks read, taken once the run ended."""

    records: list[AccessRecord]
    """The sandbox's access log in order of arrival."""
    ledger: LedgerState
    interval: timedelta
    """The vendor's interval (the sandbox enforces the same)."""

    @classmethod
    def of(cls, pipeline: Pipeline, gcs_client: StorageClient) -> Audit:
        store = GcsLedgerStore(gcs_client, pipeline.bucket, "hatch")
        return cls(
            records=sorted(pipeline.sandbox.access_log, key=lambda record: record.at),
            ledger=store.read(organization_key(DEFAULT_API_KEY)),
            interval=timedelta(seconds=pipeline.sandbox.config.min_export_interval_seconds),
        )

    @property
    def counted(self) -> list[AccessRecord]:
        """The requests the vendor counts: every one it received but those it answered 429."""
        return [record for record in self.records if record.status != 429]

    def stall_bound(self, spacing: timedelta, injected_seconds: float) -> float:
        """The longest a run that sent these requests may take without having stalled: each request's spacing and
        allowance, the delays the sandbox was told to add (slow answers, Retry-After), and start-up."""
        per_request = spacing.total_seconds() + PER_REQUEST_ALLOWANCE_SECONDS
        return STARTUP_ALLOWANCE_SECONDS + len(self.records) * per_request + injected_seconds


def report(audit: Audit) -> None:
    """The access log, one line per request, in the test's output (pytest shows it when a case fails)."""
    for record in audit.records:
        print(
            f"  {record.at.time()} {record.data_source} {record.start_date}..{record.end_date} "
            f"{record.status} {record.fault or ''}"
        )
    print(f"  ledger slots {[slot.time().isoformat() for slot in audit.ledger.slots]}, claims {audit.ledger.claims}")


def assert_faults_served(audit: Audit, faults: Mapping[int, Fault]) -> None:
    """Each fault met its request: a run that sent fewer requests would not have tested it."""
    served = sorted(record.fault for record in audit.records if record.fault)
    assert served == sorted(str(fault) for fault in faults.values()), f"faults served: {served}"


def assert_requests_spaced(audit: Audit) -> None:
    """No two counted requests arrived at the vendor closer than its interval (a 429 counts for nothing)."""
    arrivals = [record.at for record in audit.counted]
    close = [
        f"{earlier.time()} and {later.time()} ({(later - earlier).total_seconds():.3f} s)"
        for earlier, later in pairwise(arrivals)
        if later - earlier < audit.interval
    ]
    assert not close, f"requests arrived closer than the interval of {audit.interval}: {close}"


def assert_none_refused_as_rate_limited(audit: Audit) -> None:
    """Every 429 was one the sandbox was told to inject; none came from its own limits."""
    refused = [record for record in audit.records if record.status == 429 and record.fault is None]
    assert not refused, f"the vendor's own limits refused {len(refused)} request(s): {refused}"


def assert_ledger_counts_what_the_vendor_counted(audit: Audit) -> None:
    """One slot per request the vendor counted: no phantom slot, none missing."""
    slots = [slot.time().isoformat() for slot in audit.ledger.slots]
    arrivals = [record.at.time().isoformat() for record in audit.counted]
    assert len(slots) == len(arrivals), (
        f"the ledger holds {len(slots)} slot(s) {slots}; the vendor counted {len(arrivals)} request(s) arriving at "
        f"{arrivals}"
    )


def assert_no_claim_left(audit: Audit) -> None:
    assert not audit.ledger.claims, f"claims left in the ledger after the run: {audit.ledger.claims}"


def assert_no_stall(label: str, wall_seconds: float, bound_seconds: float) -> None:
    print(f"{label}: wall time {wall_seconds:.1f} s, bound {bound_seconds:.1f} s")
    assert wall_seconds <= bound_seconds, (
        f"{label} stalled: {wall_seconds:.1f} s, beyond its bound {bound_seconds:.1f} s"
    )


def assert_every_day_landed(pipeline: Pipeline, window: ExportWindow) -> None:
    """Each day of the window is in each source's BigQuery table with all its rows, once."""
    for source in SOURCES:
        table = pipeline.table(source)
        natural_id = "contact_history_id" if source == "contact_history" else "id"
        days = sorted(set(table["_export_date"].to_list()))
        assert days == list(window.dates()), f"{source}: days in BigQuery {days}, wanted {list(window.dates())}"
        assert table.height == window.days * ROWS_PER_DAY, f"{source}: {table.height} rows"
        assert table[natural_id].n_unique() == table.height, f"{source}: a row landed twice"


def assert_vendor_and_ledger_agree(audit: Audit) -> None:
    """What the access log and the ledger must say after any run, whatever the faults."""
    assert_requests_spaced(audit)
    assert_none_refused_as_rate_limited(audit)
    assert_ledger_counts_what_the_vendor_counted(audit)
    assert_no_claim_left(audit)

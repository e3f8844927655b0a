"""The raw stage: make sure every day of a range has a stored export, spending as few exports as the vendor's
limits allow (stored days are reused, by any run or machine)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

from hatch_pipeline.contract import DataSource, ExportWindow, contiguous_windows, earliest_allowed_day, range_violations
from hatch_pipeline.export_api.client import ExportedFile, ExportOutcome, HatchExportClient, NothingToSend
from hatch_pipeline.export_api.errors import HatchExportError, InvalidExportRequest, SlotUnavailable
from hatch_pipeline.export_api.ledger import Claim, Decide, RateLedger
from hatch_pipeline.export_api.planner import Sent, SizeEvidence, export_days, plan_windows
from hatch_pipeline.stages.common import lost_days, quiet
from hatch_pipeline.storage.keys import raw_manifests_prefix, raw_zip_key
from hatch_pipeline.storage.manifests import Manifest, RawExport, list_manifests, newest_per_day, publish_raw, read_raw
from hatch_pipeline.storage.store import ObjectStore


@dataclass(frozen=True)
class LandedWindow:
    """One stored export that holds days of the run."""

    window: ExportWindow
    exported: bool
    """True when this run exported it; False when an export stored earlier (by any run or machine) was reused."""
    zip_uri: str | None
    """None when the vendor answered 204 (no rows)."""
    uncompressed_bytes: int


@dataclass(frozen=True)
class RawLanding:
    windows: tuple[LandedWindow, ...]
    """Every stored export that holds the run's days, in date order."""
    lost: tuple[date, ...]
    """Days of the run with nothing stored that the vendor no longer serves: not requested (see `lost_days`)."""
    exports: int
    """Requests that spent an export (413s included, retries of one window not)."""
    refusals: int
    """Of which the vendor answered 413 (the window was planned again smaller)."""
    seconds: float
    """Wall-clock time of the stage, waits for slots and for other runs' exports included."""

    @property
    def exported(self) -> tuple[LandedWindow, ...]:
        return tuple(window for window in self.windows if window.exported)

    @property
    def reused(self) -> tuple[LandedWindow, ...]:
        return tuple(window for window in self.windows if not window.exported)


class ExportsPaused(HatchExportError):
    """The vendor's limits allow no further export soon: what was exported is stored, the rest waits."""

    def __init__(self, source: str, stored: Sequence[date], remaining: Sequence[date], cause: SlotUnavailable):
        windows = ", ".join(str(window) for window in contiguous_windows(remaining))
        super().__init__(
            f"{source}: stopped before the vendor's limits would refuse a request. {len(stored)} day(s) of the "
            f"range are stored, {len(remaining)} remain ({windows}); nothing stored will be exported again. {cause}"
        )
        self.stored = tuple(stored)
        self.remaining = tuple(remaining)
        self.opens_at = cause.opens_at


def check_exportable(days: ExportWindow, today: date) -> None:
    """Fail before any export when the vendor would refuse part of the range."""
    problems = range_violations(days, today)
    if problems:
        raise InvalidExportRequest(
            f"days {days} cannot be exported: " + "; ".join(problems) + ". Materialize only days the API still "
            "serves (the last 180 days up to yesterday); older days cannot be fetched again."
        )


def land_raw(
    source: DataSource,
    days: ExportWindow,
    *,
    client: HatchExportClient,
    ledger: RateLedger,
    store: ObjectStore,
    max_payload_bytes: int,
    today: date,
    refetch_since: datetime | None = None,
    progress: Callable[[str], None] = quiet,
    poll_seconds: float = 5.0,
) -> RawLanding:
    """Make sure every day of the range has a stored export, exporting only the days that have none.

    Days stored by any earlier run, retry or machine are reused. A refetch passes when it began (`refetch_since`):
    then only what was stored since counts, so a refetch that pauses, is retried or is re-executed exports each day
    once across all its attempts. What to export is decided again when each request's slot has come, against what
    is stored and what other senders have claimed at that moment, so overlapping runs export each day once: a day
    another sender is exporting is waited for (polling every `poll_seconds`), not exported again. The plan learns
    from every answer. Each ZIP is stored, unchanged, as soon as it arrives, then its manifest; a failure keeps
    what was stored. When the limits allow no further export soon, raises ExportsPaused naming what remains.
    Days the vendor no longer serves are never requested: stored ones are reused (also on a refetch, which cannot
    replace them), the others are returned as `lost`.
    """
    started = datetime.now(UTC)
    wanted = list(days.dates())
    stored = newest_per_day(list_manifests(store, raw_manifests_prefix(source)), wanted)
    lost = lost_days(days, stored, today)
    exportable = earliest_allowed_day(today)

    def fresh(manifest: Manifest) -> bool:
        return refetch_since is None or manifest.written_at >= refetch_since

    earlier = {day: manifest for day, manifest in stored.items() if fresh(manifest) or day < exportable}
    todo = [day for day in wanted if day not in earlier and day >= exportable]
    for window in contiguous_windows(todo):
        check_exportable(window, today)
    landed = [_reused(store, manifest) for manifest in sorted(set(earlier.values()))]
    covered: set[date] = set(earlier)

    def stored_now() -> dict[date, Manifest]:
        manifests = list_manifests(store, raw_manifests_prefix(source))
        return newest_per_day([m for m in manifests if fresh(m)], todo)

    def decide_for(window: ExportWindow) -> Decide:
        def decide(claims: Sequence[Claim]) -> ExportWindow | None:
            stored = stored_now()
            claimed = {day for claim in claims if claim.source == source for day in claim.window.dates()}
            free = contiguous_windows(day for day in window.dates() if day not in stored and day not in claimed)
            return free[0] if free else None

        return decide

    with tempfile.TemporaryDirectory(prefix="hatch-raw-") as workdir:

        def send(window: ExportWindow) -> Sent:
            while True:
                left = [day for day in todo if day not in covered]
                progress(_before_export(source, window, ledger, left, max_payload_bytes))
                outcome = client.export(source, window, Path(workdir), decide=decide_for(window))
                if isinstance(outcome, NothingToSend):
                    stored = stored_now()
                    found = frozenset(day for day in window.dates() if day in stored)
                    if found:
                        landed.extend(_reused(store, manifest) for manifest in sorted({stored[d] for d in found}))
                        covered.update(found)
                        progress(f"{source} {window}: already stored by another run, nothing sent")
                        return Sent(covered=found, exported=None)
                    progress(f"{source} {window}: another run is exporting these days; waiting for its ZIP")
                    time.sleep(poll_seconds)
                    continue
                stored_window = _store_raw(store, outcome)
                ledger.release(outcome.claim_owner)
                landed.append(stored_window)
                covered.update(outcome.window.dates())
                progress(_after_export(source, stored_window, sum(day not in covered for day in todo)))
                return Sent(
                    covered=frozenset(outcome.window.dates()),
                    exported=outcome.window,
                    uncompressed_bytes=stored_window.uncompressed_bytes,
                )

        try:
            run = export_days(
                todo,
                send,
                evidence=SizeEvidence(bytes_per_day=ledger.observed_bytes_per_day(source)),
                max_payload_bytes=max_payload_bytes,
                source=source,
            )
        except SlotUnavailable as stop:
            raise ExportsPaused(source, sorted(covered), [day for day in todo if day not in covered], stop) from stop
    return RawLanding(
        windows=tuple(sorted(landed, key=lambda window: window.window)),
        lost=tuple(lost),
        exports=run.requests,
        refusals=run.refusals,
        seconds=(datetime.now(UTC) - started).total_seconds(),
    )


def _before_export(
    source: str, window: ExportWindow, ledger: RateLedger, left: list[date], max_payload_bytes: int
) -> str:
    """Where a long raw step stands, as the next request is about to be sent (read-only: reserves nothing)."""
    usage = ledger.usage()
    evidence = SizeEvidence(bytes_per_day=ledger.observed_bytes_per_day(source))
    planned = plan_windows(left, evidence, max_payload_bytes=max_payload_bytes)
    finish = ledger.next_slots(len(planned))[-1]
    return (
        f"{source} {window}: exporting {window.days} day(s) ({len(left)} of the run still to store, about "
        f"{len(planned)} export(s)); {usage.used_in_24h} export(s) used in the last 24 h, {usage.left_in_24h} left; "
        f"next slot {usage.next_slot.isoformat(timespec='seconds')}, last export about "
        f"{finish.isoformat(timespec='seconds')}"
    )


def _after_export(source: str, landed: LandedWindow, days_left: int) -> str:
    what = f"stored {landed.zip_uri} ({landed.uncompressed_bytes:,} bytes)" if landed.zip_uri else "no rows (204)"
    return f"{source} {landed.window}: exported, {what}; {days_left} day(s) of the run still to store"


def _reused(store: ObjectStore, manifest: Manifest) -> LandedWindow:
    export = read_raw(store, manifest)
    return LandedWindow(
        window=manifest.window,
        exported=False,
        zip_uri=store.uri(export.zip) if export.zip else None,
        uncompressed_bytes=export.uncompressed_bytes,
    )


def _store_raw(store: ObjectStore, outcome: ExportOutcome) -> LandedWindow:
    """Store the ZIP (content-addressed: never replaced by other bytes), then its manifest, which makes its days
    count as stored: a crash in between costs the export again, never a day pointing at a missing file."""
    export = RawExport(source=outcome.source, window=outcome.window, exported_at=datetime.now(UTC), zip=None)
    if isinstance(outcome, ExportedFile):
        key = raw_zip_key(outcome.source, outcome.path.stem, outcome.sha256)
        store.put_file_once(key, outcome.path, "application/zip")
        outcome.path.unlink()
        export = replace(
            export,
            zip=key,
            sha256=outcome.sha256,
            output_format=outcome.output_format,
            compressed_bytes=outcome.compressed_bytes,
            uncompressed_bytes=outcome.uncompressed_bytes,
        )
    publish_raw(store, export)
    return LandedWindow(
        window=outcome.window,
        exported=True,
        zip_uri=store.uri(export.zip) if export.zip else None,
        uncompressed_bytes=export.uncompressed_bytes,
    )

"""A synthetic vendor to play `export_days` against: true bytes per day and a payload limit, nothing else.

Pure, so property tests can run thousands of backfills in seconds and compare them with the fewest exports the
true sizes allow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from hatch_pipeline.contract import MAX_WINDOW_DAYS, ExportWindow
from hatch_pipeline.export_api.errors import PayloadTooLarge
from hatch_pipeline.export_api.planner import ExportRun, Sent, SizeEvidence, export_days, pack_windows


@dataclass(frozen=True)
class Backfill:
    run: ExportRun
    learnt: SizeEvidence
    """The sizes a ledger holds afterwards: each exported window's bytes spread over its days (no refusals: those
    are only known within a run)."""
    sent_sizes: tuple[int, ...]
    """True bytes of each successful export, in order."""


def simulate(
    days: Sequence[date],
    true_bytes: Mapping[date, int],
    *,
    limit: int,
    evidence: SizeEvidence | None = None,
    max_window_days: int = MAX_WINDOW_DAYS,
) -> Backfill:
    """Run `export_days` over `days` against a vendor that answers 413 to any window over `limit` true bytes."""
    start = evidence or SizeEvidence()
    sizes: list[int] = []

    def send(window: ExportWindow) -> Sent:
        size = sum(true_bytes[day] for day in window.dates())
        if size > limit:
            raise PayloadTooLarge("contact_history", window)
        sizes.append(size)
        return Sent(covered=frozenset(window.dates()), exported=window, uncompressed_bytes=size)

    run = export_days(
        days, send, evidence=start, max_payload_bytes=limit, source="contact_history", max_window_days=max_window_days
    )
    learnt = SizeEvidence(start.bytes_per_day)
    for window, size in zip(run.windows, sizes, strict=True):
        learnt = learnt.with_export(window, size)
    return Backfill(run=run, learnt=learnt, sent_sizes=tuple(sizes))


def fewest_exports(days: Sequence[date], true_bytes: Mapping[date, int], *, limit: int, max_window_days: int) -> int:
    """The fewest exports any plan needs, knowing the true sizes (greedy packing is optimal: see pack_windows)."""
    sizes = [true_bytes[day] for day in days]
    return len(pack_windows(days, sizes, budget=limit, max_window_days=max_window_days))

"""Plan export windows from observed sizes, and recover from 413s by splitting.

Every export request spends a rate-limited slot (one per 5 minutes, 100 per day), 413s included, so a backfill
asks for as few windows as the payload limit allows and splits only the windows the vendor refuses.
Pure functions: no I/O, no clock, no Dagster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from hatch_pipeline.export_api.errors import PayloadTooLarge
from hatch_pipeline.export_api.windows import MAX_WINDOW_DAYS, ExportWindow, contiguous_windows


def estimate_daily_bytes(start: date, end: date, bytes_per_day: Mapping[date, float]) -> list[float]:
    """Estimated uncompressed bytes of each day of start..end, in order.

    A day with an observation uses it. A day without one uses the plain mean of every observation given (any
    date, inside the range or not): with no trend model to trust, the mean is the least surprising guess, and
    the 413 path corrects an underestimate at the cost of one slot. With no observation at all every day
    estimates 0, so only the window length limits a window: the first export teaches us sizes.
    """
    if end < start:
        raise ValueError(f"end {end} is before start {start}; pass an inclusive range with start <= end")
    for day, size in bytes_per_day.items():
        if not math.isfinite(size) or size < 0:
            raise ValueError(f"observed size {size!r} for {day} is not a finite, non-negative byte count")
    fallback = math.fsum(bytes_per_day.values()) / len(bytes_per_day) if bytes_per_day else 0.0
    days = (end - start).days + 1
    return [float(bytes_per_day.get(start + timedelta(days=offset), fallback)) for offset in range(days)]


@dataclass(frozen=True)
class SizeEvidence:
    """What is known of one source's uncompressed bytes per day."""

    bytes_per_day: Mapping[date, float] = field(default_factory=dict)
    """Observed sizes (an export's bytes spread over its days), from the ledger and this run."""
    refused: tuple[ExportWindow, ...] = ()
    """Windows the vendor answered 413 for in this run: each holds more than the payload limit."""

    def with_export(self, window: ExportWindow, uncompressed_bytes: int) -> SizeEvidence:
        share = uncompressed_bytes / window.days
        return replace(self, bytes_per_day={**self.bytes_per_day, **dict.fromkeys(window.dates(), share)})

    def with_refusal(self, window: ExportWindow) -> SizeEvidence:
        return replace(self, refused=(*self.refused, window))


def plan_windows(
    days: Sequence[date],
    evidence: SizeEvidence,
    *,
    max_payload_bytes: int,
    safety_margin: float = 0.8,
    max_window_days: int = MAX_WINDOW_DAYS,
) -> list[ExportWindow]:
    """The fewest contiguous windows covering exactly `days` (a window never spans a day not in `days`), each
    within the day limit and the byte budget; the first is sent next, and the rest is planned again after it.

    The budget is `safety_margin * max_payload_bytes` of estimated bytes (see `estimate_daily_bytes`); a window
    the vendor refused is never planned again whole. A single day whose estimate alone exceeds the budget still
    gets a one-day window: only the vendor's 413 can tell for sure.

    Greedy packing (make each window as long as it may be) is optimal within each run of consecutive days. A
    window is allowed when it spans at most `max_window_days`, its estimate fits the budget and it lies inside
    no refused window, or it is a single day; every shorter window inside an allowed one is allowed too. Then,
    by induction, after k windows the greedy plan reaches at least as far as any valid plan's first k windows.
    """
    if max_payload_bytes <= 0:
        raise ValueError(f"max_payload_bytes must be positive, got {max_payload_bytes}")
    if not 0 < safety_margin <= 1:
        raise ValueError(f"safety_margin must be in (0, 1] (a share of the payload limit), got {safety_margin}")
    if not 1 <= max_window_days <= MAX_WINDOW_DAYS:
        raise ValueError(f"max_window_days must be between 1 and the vendor's {MAX_WINDOW_DAYS}, got {max_window_days}")
    budget = safety_margin * max_payload_bytes
    windows: list[ExportWindow] = []
    for run in contiguous_windows(days):
        estimates = estimate_daily_bytes(run.start, run.end, evidence.bytes_per_day)
        for refused in evidence.refused:  # a refused window holds more than the limit: at least this per day
            floor = (max_payload_bytes + 1) / refused.days
            for offset, day in enumerate(ExportWindow(run.start, run.end).dates()):
                if refused.start <= day <= refused.end:
                    estimates[offset] = max(estimates[offset], floor)
        first = 0
        while first < len(estimates):
            last = first
            while last + 1 < len(estimates):
                longer = ExportWindow(run.start + timedelta(days=first), run.start + timedelta(days=last + 1))
                if longer.days > max_window_days or math.fsum(estimates[first : last + 2]) > budget:
                    break
                last += 1
            windows.append(ExportWindow(run.start + timedelta(days=first), run.start + timedelta(days=last)))
            first = last + 1
    return windows


class DayExceedsPayloadLimit(PayloadTooLarge):
    """413 for a one-day window: splitting cannot help, so only the vendor can."""

    def __init__(self, source: str, day: date) -> None:
        super().__init__(source, ExportWindow(day, day))
        self.day = day

    def __str__(self) -> str:
        return (
            f"The single day {self.day} of {self.source} exceeds the vendor's payload limit (HTTP 413) and cannot be "
            "split further: a day is the smallest export window. Ask Hatch support to raise the organization's "
            "export payload limit (or to export that day for you), then run again."
        )


@dataclass(frozen=True)
class Sent:
    """What one `send` achieved."""

    covered: frozenset[date]
    """Days of the asked window now stored (never empty)."""
    exported: ExportWindow | None
    """The window actually requested; None when nothing was sent (another run had stored the days)."""
    uncompressed_bytes: int = 0


@dataclass(frozen=True)
class ExportRun:
    requests: int
    """Exports sent, 413s included: each spent a slot."""
    refusals: int
    """Of which the vendor answered 413."""
    windows: tuple[ExportWindow, ...]
    """Windows exported successfully, in order."""


def export_days(
    days: Sequence[date],
    send: Callable[[ExportWindow], Sent],
    *,
    evidence: SizeEvidence,
    max_payload_bytes: int,
    source: str,
    max_window_days: int = MAX_WINDOW_DAYS,
) -> ExportRun:
    """Plan the remaining days, send the first window, learn from the answer, plan again, until every day is
    covered. A 413 (PayloadTooLarge from `send`) is learned and the window re-planned smaller; a refused single
    day raises DayExceedsPayloadLimit. Any other exception propagates (the caller knows what it stored)."""
    remaining = sorted(set(days))
    requests = refusals = 0
    exported: list[ExportWindow] = []
    while remaining:
        window = plan_windows(
            remaining, evidence, max_payload_bytes=max_payload_bytes, max_window_days=max_window_days
        )[0]
        try:
            sent = send(window)
        except PayloadTooLarge as too_large:
            requests += 1
            refusals += 1
            if window.days < 2:
                raise DayExceedsPayloadLimit(source, window.start) from too_large
            evidence = evidence.with_refusal(too_large.window)
            continue
        if not sent.covered:
            raise ValueError(f"send({window}) covered no day; it must store at least one day or raise")
        if sent.exported is not None:
            requests += 1
            exported.append(sent.exported)
            evidence = evidence.with_export(sent.exported, sent.uncompressed_bytes)
        remaining = [day for day in remaining if day not in sent.covered]
    return ExportRun(requests=requests, refusals=refusals, windows=tuple(exported))

"""Plan export windows from observed sizes, and recover from 413s by splitting.

Every export request spends a rate-limited slot (one per 5 minutes, 100 per day), 413s included, so a backfill
asks for as few windows as the payload limit allows and splits only the windows the vendor refuses.
Pure functions: no I/O, no clock, no Dagster.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Generic, TypeVar

from hatch_pipeline.export_api.errors import PayloadTooLarge
from hatch_pipeline.export_api.windows import MAX_WINDOW_DAYS, ExportWindow

T = TypeVar("T")


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


def plan_windows(
    start: date,
    end: date,
    *,
    bytes_per_day: Mapping[date, float],
    max_payload_bytes: int,
    safety_margin: float = 0.8,
    max_window_days: int = MAX_WINDOW_DAYS,
) -> list[ExportWindow]:
    """The fewest contiguous windows covering start..end, each within the day limit and the byte budget.

    The budget is `safety_margin * max_payload_bytes` of estimated bytes (see `estimate_daily_bytes`). A single
    day whose estimate alone exceeds it still gets a one-day window: only the vendor's 413 can tell for sure.

    Greedy packing (make each window as long as it may be) is optimal. A window is allowed when it spans at
    most `max_window_days` and its estimate fits the budget, or it is a single day; since daily estimates are
    non-negative, every shorter window inside an allowed one is allowed too. Then, by induction, after k
    windows the greedy plan reaches at least as far as any valid plan's first k windows: if any plan's k-th
    window ends at day e, the greedy k-th window starts no later than that window's start, and the span from
    the greedy start to e lies inside that window, hence is allowed, so greedy reaches e or beyond. Greedy
    therefore never needs more windows than any other plan.
    """
    if max_payload_bytes <= 0:
        raise ValueError(f"max_payload_bytes must be positive, got {max_payload_bytes}")
    if not 0 < safety_margin <= 1:
        raise ValueError(f"safety_margin must be in (0, 1] (a share of the payload limit), got {safety_margin}")
    if not 1 <= max_window_days <= MAX_WINDOW_DAYS:
        raise ValueError(f"max_window_days must be between 1 and the vendor's {MAX_WINDOW_DAYS}, got {max_window_days}")
    estimates = estimate_daily_bytes(start, end, bytes_per_day)
    budget = safety_margin * max_payload_bytes

    windows: list[ExportWindow] = []
    first = 0
    while first < len(estimates):
        last = first
        # fsum is exactly rounded, so whether a window fits does not depend on how it was summed.
        while (
            last + 1 < len(estimates)
            and last + 2 - first <= max_window_days
            and math.fsum(estimates[first : last + 2]) <= budget
        ):
            last += 1
        windows.append(ExportWindow(start + timedelta(days=first), start + timedelta(days=last)))
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
class WindowsExported(Generic[T]):
    """What `export_windows` did: the results and what they cost in rate-limited requests."""

    results: list[tuple[ExportWindow, T]]
    """In date order, one per window actually exported."""
    requests: int
    """Exports attempted, 413s included: each spent a slot."""
    splits: int
    """How many times a window was halved after a 413."""


def export_windows(
    windows: Sequence[ExportWindow], export: Callable[[ExportWindow], T], *, source: str
) -> WindowsExported[T]:
    """Export each window in order, halving any window of 2+ days that the vendor refuses with a 413.

    The halves go in front of the remaining windows, so results stay in date order. Every split shortens a
    window, so this ends: in results, or in `DayExceedsPayloadLimit` when one day alone is too large.
    Any other exception propagates unchanged. `source` only names the data source in that error.
    """
    pending = deque(windows)
    results: list[tuple[ExportWindow, T]] = []
    requests = splits = 0
    while pending:
        window = pending.popleft()
        requests += 1
        try:
            results.append((window, export(window)))
        except PayloadTooLarge as too_large:
            if window.days < 2:
                raise DayExceedsPayloadLimit(source, window.start) from too_large
            pending.extendleft(reversed(window.split()))
            splits += 1
    return WindowsExported(results=results, requests=requests, splits=splits)

"""Plan export windows from what is known of sizes, and re-plan after every answer.

Every export request spends a rate-limited slot (one per 5 minutes, 100 per day), 413s included, so a backfill
asks for as few windows as the payload limit allows. `export_days` sends one window at a time and plans the
remaining days again after each answer from all it knows by then (`SizeEvidence`): an export measures the size of
its days, a 413 proves its window holds more than the limit. A cold start therefore pays once for what it does not
know, and a warm run packs the days it has measured as tightly as their sizes allow.
Pure functions: no I/O, no clock, no Dagster.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final

from hatch_pipeline.contract import MAX_WINDOW_DAYS, ExportWindow
from hatch_pipeline.export_api.errors import PayloadTooLarge

GROWTH_MARGIN: Final = 0.02
"""Share by which a window's estimated bytes are raised before they are held against the payload limit.

Warm plans size each day from its own observed bytes, so what the margin has to absorb is how far an export of the
same days can come out above what was measured: rows updated or added to past days since (small: the vendor's days
are history), and the ledger spreading each export evenly over its days, which is exact for any window made of
whole earlier windows and elsewhere errs only by the uneven share of the partly covered windows at its two ends.
Two per cent covers that for windows that span weeks, which is where packing decides the count. A larger blanket
margin spends a sure export to avoid a possible one: the previous 20 % planned 8 windows where 6 sufficed (the
10 MB benchmark). The balanced plan (`plan_windows`) gives every window all the headroom the count leaves, so the
margin is a floor, not the usual headroom.
"""

NEIGHBOURHOOD_DAYS: Final = 14
"""A day not yet measured is estimated from the days measured at most this far from it (two weekly cycles, so a
weekday/weekend pattern averages out), before falling back to the mean of every measurement."""


@dataclass(frozen=True)
class SizeEvidence:
    """What is known of one source's uncompressed bytes per day."""

    bytes_per_day: Mapping[date, float] = field(default_factory=dict)
    """Observed bytes per day (from the ledger and this run): an export's bytes spread evenly over its days."""
    refused: tuple[ExportWindow, ...] = ()
    """Windows the vendor answered 413 for in this run: each holds more than the payload limit."""

    def __post_init__(self) -> None:
        for day, size in self.bytes_per_day.items():
            if not math.isfinite(size) or size < 0:
                raise ValueError(f"observed size {size!r} for {day} is not a finite, non-negative byte count")

    def with_export(self, window: ExportWindow, uncompressed_bytes: int) -> SizeEvidence:
        """Learn an export's size, spread evenly over its days (a 204 is 0 bytes); newer sizes replace older ones."""
        if uncompressed_bytes < 0:
            raise ValueError(f"uncompressed_bytes {uncompressed_bytes} is negative; pass the size of the export")
        sizes = dict.fromkeys(window.dates(), uncompressed_bytes / window.days)
        return SizeEvidence({**self.bytes_per_day, **sizes}, self.refused)

    def with_refusal(self, window: ExportWindow) -> SizeEvidence:
        return SizeEvidence(self.bytes_per_day, (*self.refused, window))


def estimate_daily_bytes(days: Sequence[date], evidence: SizeEvidence, *, max_payload_bytes: int) -> list[float]:
    """Estimated uncompressed bytes of each of `days`, in order.

    A measured day uses its measurement. Another day uses the mean of the days measured within
    NEIGHBOURHOOD_DAYS of it (sizes drift with growth and seasons, so near days tell most), else the mean of every
    measurement, else 0: with nothing measured only the window length limits a window, and the first export
    measures.

    Then every refusal is honoured: a refused window holds more than `max_payload_bytes`. Where the estimates of
    its days say otherwise they are proven low, and its unmeasured days (all its days, if every one was measured and
    the data has changed since) are scaled up, keeping their proportions, until the window is estimated GROWTH_MARGIN
    over the limit: the least the refusal proves, plus the margin. The next plan then leaves out that window and a
    little more, and learns again from what it sends. (A refusal of days nothing near was measured of, where no
    proportion is known, is answered by a probe instead: see `plan_windows`.)
    """
    estimate = _estimator(evidence.bytes_per_day)
    raised: dict[date, float] = {}
    for refused in evidence.refused:
        refused_days = list(refused.dates())
        sizes = {day: raised.get(day, estimate(day)) for day in refused_days}
        proven = (1 + GROWTH_MARGIN) * max_payload_bytes
        total = math.fsum(sizes.values())
        if total > max_payload_bytes:
            continue
        unmeasured = [day for day in refused_days if day not in evidence.bytes_per_day] or refused_days
        rest = math.fsum(sizes[day] for day in unmeasured)
        missing = proven - (total - rest)
        for day in unmeasured:
            raised[day] = sizes[day] * missing / rest if rest > 0 else missing / len(unmeasured)
    return [raised.get(day, estimate(day)) for day in days]


def _estimator(bytes_per_day: Mapping[date, float]) -> Callable[[date], float]:
    measured = sorted(bytes_per_day)
    totals = [0.0, *itertools.accumulate(bytes_per_day[day] for day in measured)]
    overall = totals[-1] / len(measured) if measured else 0.0
    reach = timedelta(days=NEIGHBOURHOOD_DAYS)

    def estimate(day: date) -> float:
        if day in bytes_per_day:
            return bytes_per_day[day]
        first, last = bisect.bisect_left(measured, day - reach), bisect.bisect_right(measured, day + reach)
        return (totals[last] - totals[first]) / (last - first) if last > first else overall

    return estimate


def pack_windows(
    days: Sequence[date],
    sizes: Sequence[int],
    *,
    budget: int,
    max_window_days: int = MAX_WINDOW_DAYS,
    refused: Sequence[ExportWindow] = (),
) -> list[ExportWindow]:
    """The fewest windows covering `days` (sorted, unique), each within `budget` bytes of `sizes` (one per day).

    A window is allowed when its days are consecutive dates all in `days`, it spans at most `max_window_days`, it
    contains no `refused` window and its sizes sum to at most `budget`, or when it is a single day (only the vendor
    can tell whether a day fits). Greedy packing (make each window as long as it may be) is optimal: every window
    inside an allowed one is allowed too (sizes are non-negative, and a window inside another contains fewer
    refused windows and days), so, by induction, after k windows the greedy plan reaches at least as far as any
    valid plan's first k windows: if a plan's k-th window ends at day e, the greedy k-th window starts no later
    than that window's start, and the span from the greedy start to e lies inside that window, hence is allowed,
    so greedy reaches e or beyond. Sizes are integers so that whether a window fits never depends on rounding.
    """
    latest_refused_start: dict[date, date] = {}
    for window in refused:
        latest_refused_start[window.end] = max(window.start, latest_refused_start.get(window.end, window.start))
    windows: list[ExportWindow] = []
    first = 0
    while first < len(days):
        last, total = first, sizes[first]
        newest_refused_start = date.min  # of the refused windows that end inside the window grown so far
        while last + 1 < len(days):
            following = days[last + 1]
            total += sizes[last + 1]
            newest_refused_start = max(newest_refused_start, latest_refused_start.get(following, date.min))
            if (
                following - days[last] != timedelta(days=1)
                or (following - days[first]).days + 1 > max_window_days
                or total > budget
                or newest_refused_start >= days[first]
            ):
                break
            last += 1
        windows.append(ExportWindow(days[first], days[last]))
        first = last + 1
    return windows


def plan_windows(
    days: Sequence[date],
    evidence: SizeEvidence,
    *,
    max_payload_bytes: int,
    max_window_days: int = MAX_WINDOW_DAYS,
) -> list[ExportWindow]:
    """The windows to export `days` (sorted, unique, may have gaps: a window never covers a day not in `days`,
    since stored days are never exported again), the first of which is sent next. Called again after every export
    with the new evidence, so the plan learns within the run.

    - Nothing measured and nothing refused: each run of consecutive days in windows of `max_window_days`. A small
      range costs exactly one export, and a large one is refused once and then measured.
    - The first day lies in a refused window and no day within NEIGHBOURHOOD_DAYS of it is measured: all that is
      known of it is a lower bound, so the next window is that one day, a probe that fits unless the day alone
      exceeds the limit (then nothing can export it). It costs one export at most over a plan that knew the
      sizes (the rest is a suffix of the days, which never needs more windows than all of them), and it measures
      what the refusal could not.
    - Otherwise the fewest windows whose estimates (`estimate_daily_bytes`, raised by GROWTH_MARGIN) fit the limit
      (`pack_windows`, optimal), and of the plans with that many windows the one whose largest window is smallest:
      the fewest exports the estimates allow, with the most headroom any plan of that count can give against an
      estimate that proves low. That budget is found by bisection, as the count `pack_windows` needs only grows
      as the budget shrinks.
    """
    if max_payload_bytes <= 0:
        raise ValueError(f"max_payload_bytes must be positive, got {max_payload_bytes}")
    if not 1 <= max_window_days <= MAX_WINDOW_DAYS:
        raise ValueError(f"max_window_days must be between 1 and the vendor's {MAX_WINDOW_DAYS}, got {max_window_days}")
    if any(later <= earlier for earlier, later in itertools.pairwise(days)):
        raise ValueError("days must be sorted and unique; pass the days still to export in date order")
    if not days:
        return []
    probe: list[ExportWindow] = []
    if _only_bounded_below(days[0], evidence):
        probe, days = [ExportWindow(days[0], days[0])], days[1:]
    estimates = estimate_daily_bytes(days, evidence, max_payload_bytes=max_payload_bytes)
    sizes = [math.ceil(estimate * (1 + GROWTH_MARGIN)) for estimate in estimates]

    def pack(budget: int) -> list[ExportWindow]:
        return pack_windows(days, sizes, budget=budget, max_window_days=max_window_days, refused=evidence.refused)

    fewest = len(pack(max_payload_bytes))
    low, high = 0, max_payload_bytes  # pack(high) needs `fewest`; find the least budget that still does
    while low < high:
        middle = (low + high) // 2
        if len(pack(middle)) <= fewest:
            high = middle
        else:
            low = middle + 1
    return probe + pack(high)


def _only_bounded_below(day: date, evidence: SizeEvidence) -> bool:
    near = (day + timedelta(days=offset) for offset in range(-NEIGHBOURHOOD_DAYS, NEIGHBOURHOOD_DAYS + 1))
    return any(window.start <= day <= window.end for window in evidence.refused) and not any(
        other in evidence.bytes_per_day for other in near
    )


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
    """What `send` did with the window it was asked for."""

    covered: frozenset[date]
    """Days of the asked window now stored (non-empty; may be all of it)."""
    exported: ExportWindow | None
    """The window actually sent (None if nothing was sent: e.g. found stored by another run)."""
    uncompressed_bytes: int = 0
    """Of `exported` (0 for a 204)."""


@dataclass(frozen=True)
class ExportRun:
    """What `export_days` spent and exported."""

    requests: int
    """Exports sent, 413s included: each spent a slot."""
    refusals: int
    """Of `requests`, how many the vendor answered 413."""
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
    """Export `days` one window at a time, planning the remaining days again after every answer.

    Loop: plan the remaining days (`plan_windows`) and send the first window. `send` raises PayloadTooLarge on a
    413: the refusal is learnt and the days planned again (a one-day window refused raises DayExceedsPayloadLimit,
    since no window is smaller). On success the exported size is learnt and the covered days leave the plan.
    Any other exception propagates unchanged (e.g. SlotUnavailable when the daily cap is reached: what was sent
    is stored, and the caller knows it). `source` only names the data source in errors.

    This ends: every success removes a day, and every refusal rules out its window and all windows containing it
    from every later plan (`pack_windows`), of which there are finitely many, while one-day windows stay allowed.
    """
    remaining = list(days)
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
            if too_large.window.days < 2:
                raise DayExceedsPayloadLimit(source, too_large.window.start) from too_large
            evidence = evidence.with_refusal(too_large.window)
            continue
        asked = set(window.dates())
        if not sent.covered or not sent.covered <= asked:
            raise ValueError(
                f"send({window}) reported {sorted(sent.covered)} as stored; it must store some day of the window it "
                "was asked for and report only those days (a bug in the caller's send)"
            )
        if sent.exported is not None:
            requests += 1
            exported.append(sent.exported)
            evidence = evidence.with_export(sent.exported, sent.uncompressed_bytes)
        remaining = [day for day in remaining if day not in sent.covered]
    return ExportRun(requests=requests, refusals=refusals, windows=tuple(exported))

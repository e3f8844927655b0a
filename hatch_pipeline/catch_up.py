"""What the catch-up sensor requests: the missing days worth a run, as plain Python (no Dagster here).

A day needs catching up when the vendor still serves it (`earliest_allowed_day(today)` up to yesterday), it is not
before the first partition, its raw asset is not landed (never materialized, or its latest attempt failed) and no
queued or running run will land it. Missing days are grouped into gaps of consecutive days, and each gap becomes
one range run of the sources that miss some of its days: stored days inside the gap are reused, so a source spends
one export per run of days it misses. Gaps are requested oldest first (the oldest are the next to fall out of the
vendor's 180 days and be lost), as many as the exports left in the ledger's rolling 24 hours pay for.

A landed day can still lack its Parquet or table: a run whose raw step stored some windows and then failed (the
daily cap with no pause left) shows those days' raw as materialized, and its Parquet and BigQuery steps never ran.
Such days (their Parquet's or table's latest attempt failed) become follow-ups: one run of those sources' Parquet
and BigQuery assets per stretch of days, built from the stored ZIPs, so they cost no export and are requested
at once, whatever the exports left.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import date, timedelta

from hatch_pipeline.contract import (
    DATA_SOURCES,
    DataSource,
    ExportWindow,
    contiguous_windows,
    earliest_allowed_day,
    latest_allowed_day,
)


@dataclass(frozen=True)
class Gap:
    """Consecutive days that some sources miss: one range run of those sources lands them."""

    window: ExportWindow
    missing: Mapping[DataSource, tuple[ExportWindow, ...]]
    """For each source that misses days of the window, its missing days as runs of consecutive days."""

    @property
    def sources(self) -> tuple[DataSource, ...]:
        return tuple(source for source in DATA_SOURCES if self.missing.get(source))

    @property
    def min_exports(self) -> int:
        """The fewest exports the run spends: one per run of missing days per source (more only when the vendor
        refuses a window as too large, and then the raw step pauses cleanly at the daily cap)."""
        return sum(len(windows) for windows in self.missing.values())

    @property
    def run_key(self) -> str:
        """Names the gap and exactly which days it misses: the same gap is never requested twice, while a gap
        that grows or shrinks (days landed or missed meanwhile) is a new request."""
        missing = ";".join(
            f"{source}={','.join(str(window) for window in self.missing[source])}" for source in self.sources
        )
        digest = hashlib.sha256(missing.encode()).hexdigest()[:12]
        return f"catch-up {self.window} {'+'.join(self.sources)} {digest}"

    def __str__(self) -> str:
        return f"{self.window} ({', '.join(self.sources)})"


@dataclass(frozen=True)
class FollowUp:
    """Landed days whose Parquet or table a failed run never built: one run of the Parquet and BigQuery assets of
    `sources` over `window` builds them from the stored ZIPs, spending no export."""

    window: ExportWindow
    sources: tuple[DataSource, ...]

    @property
    def run_key(self) -> str:
        """Names the stretch and its sources: the same follow-up is never requested twice."""
        return f"catch-up build {self.window} {'+'.join(self.sources)}"

    def __str__(self) -> str:
        return f"{self.window} ({', '.join(self.sources)})"


@dataclass(frozen=True)
class CatchUpPlan:
    """One evaluation's decision and everything needed to explain it."""

    window: ExportWindow | None
    """The days the sensor looks at; None when none qualifies (the first partition is after the newest day)."""
    requests: tuple[Gap, ...]
    """The gaps to request now, oldest first."""
    in_flight: Mapping[DataSource, tuple[ExportWindow, ...]]
    """Missing days that queued or running runs will land, per source."""
    repeated: tuple[tuple[Gap | FollowUp, str], ...]
    """Gaps and follow-ups requested before under the same run key, each with a description of that run: never
    again."""
    deferred: tuple[Gap, ...]
    """Gaps the exports left in the rolling 24 hours do not pay for yet."""
    exports_left: int
    follow_ups: tuple[FollowUp, ...] = ()
    """Landed days to build into Parquet and BigQuery now, oldest first."""

    def explain(self) -> str:
        """What the sensor decided and why, in sentences a user can act on (the tick's log or skip reason)."""
        if self.window is None:
            return (
                "No day to catch up: the first partition is after the newest day looked at (yesterday, or the day "
                "before while the daily schedule has not run yet)."
            )
        sentences: list[str] = []
        for gap in self.requests:
            sentences.append(f"Requesting {gap}, at least {gap.min_exports} export(s).")
        for follow_up in self.follow_ups:
            sentences.append(
                f"Building {follow_up} into Parquet and BigQuery from the stored exports (no export): a failed run "
                "stored these days but never built them."
            )
        for source, windows in self.in_flight.items():
            days = ", ".join(str(window) for window in windows)
            sentences.append(f"{source}: {days} will be landed by a queued or running run.")
        for asked, earlier in self.repeated:
            sentences.append(
                f"{asked} was requested before ({earlier}) and is not requested again: look at that run's logs, fix "
                f"the cause, then materialize {asked.window.start}...{asked.window.end} of those sources' hatch assets "
                "from the UI (one range run)."
            )
        for gap in self.deferred:
            sentences.append(
                f"{gap} needs at least {gap.min_exports} export(s): it is requested once the rolling 24 hours have "
                "that many free."
            )
        if not sentences:
            sentences.append(f"Every day from {self.window.start} to {self.window.end} is landed for every source.")
        sentences.append(f"{self.exports_left} export(s) left in the ledger's rolling 24 hours.")
        return " ".join(sentences)


def catch_up_window(first_partition: date, today: date, *, yesterday_pending: bool) -> ExportWindow | None:
    """The days the sensor may request: the vendor's window from the first partition on. While `yesterday_pending`
    (the daily schedule has not yet launched its run for yesterday) yesterday is left to that run: before it the
    vendor's nightly refresh may not have finished."""
    start = max(first_partition, earliest_allowed_day(today))
    end = latest_allowed_day(today) - timedelta(days=1 if yesterday_pending else 0)
    return ExportWindow(start, end) if start <= end else None


def plan_catch_up(
    window: ExportWindow | None,
    *,
    landed: Mapping[DataSource, Set[date]],
    unbuilt: Mapping[DataSource, Set[date]],
    in_flight: Mapping[DataSource, Sequence[ExportWindow]],
    exports_left: int,
    earlier_run: Callable[[str], str | None],
) -> CatchUpPlan:
    """The gaps and follow-ups to request now among the days of `window` (`catch_up_window`).

    `landed`: per source, the days whose raw asset is materialized and whose latest attempt did not fail.
    `unbuilt`: per source, landed days whose Parquet or table's latest attempt failed and that no run is building.
    They become follow-ups, but not the days a gap requested now rebuilds anyway.
    `in_flight`: per source, the days that queued or running runs will land (their partition ranges).
    `exports_left`: what the ledger allows in its rolling 24 hours. Each requested gap costs at least
    `Gap.min_exports`; the sum never exceeds `exports_left`, so at most that many runs are requested.
    `earlier_run`: given a run key, a description of the run requested under it before, or None.
    """
    if window is None:
        return CatchUpPlan(None, (), {}, (), (), exports_left)
    missing: dict[DataSource, set[date]] = {}
    covered: dict[DataSource, tuple[ExportWindow, ...]] = {}
    for source in DATA_SOURCES:
        absent = {day for day in window.dates() if day not in landed.get(source, set())}
        running = {day for running in in_flight.get(source, ()) for day in running.dates()}
        missing[source] = absent - running
        if absent & running:
            covered[source] = tuple(contiguous_windows(absent & running))
    requests: list[Gap] = []
    repeated: list[tuple[Gap | FollowUp, str]] = []
    deferred: list[Gap] = []
    left = exports_left
    for gap_window in contiguous_windows(day for days in missing.values() for day in days):
        gap = Gap(
            gap_window,
            {
                source: tuple(contiguous_windows(day for day in days if gap_window.start <= day <= gap_window.end))
                for source, days in missing.items()
                if any(gap_window.start <= day <= gap_window.end for day in days)
            },
        )
        earlier = earlier_run(gap.run_key)
        if earlier is not None:
            repeated.append((gap, earlier))
        elif gap.min_exports <= left:
            requests.append(gap)
            left -= gap.min_exports
        else:
            deferred.append(gap)
    follow_ups: list[FollowUp] = []
    for follow_up in _follow_ups(window, unbuilt, rebuilt_by=requests):
        earlier = earlier_run(follow_up.run_key)
        if earlier is None:
            follow_ups.append(follow_up)
        else:
            repeated.append((follow_up, earlier))
    return CatchUpPlan(
        window, tuple(requests), covered, tuple(repeated), tuple(deferred), exports_left, tuple(follow_ups)
    )


def _follow_ups(
    window: ExportWindow, unbuilt: Mapping[DataSource, Set[date]], *, rebuilt_by: Sequence[Gap]
) -> list[FollowUp]:
    """One follow-up per stretch of unbuilt days, shared by the sources whose stretch it is, oldest first. Days of
    the window only, and not those a requested gap's run builds for the same source."""
    sources_by_stretch: dict[ExportWindow, list[DataSource]] = {}
    for source in DATA_SOURCES:
        rebuilt = {day for gap in rebuilt_by if source in gap.sources for day in gap.window.dates()}
        days = (set(unbuilt.get(source, ())) & set(window.dates())) - rebuilt
        for stretch in contiguous_windows(days):
            sources_by_stretch.setdefault(stretch, []).append(source)
    return [FollowUp(stretch, tuple(sources)) for stretch, sources in sorted(sources_by_stretch.items())]

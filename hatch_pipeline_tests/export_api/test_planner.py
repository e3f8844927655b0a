"""The planner: fewest windows within the limits, and 413 recovery by splitting.

Pure functions, so the fake `export` is a plain function that answers 413 the way the vendor does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hatch_pipeline.export_api.errors import ExportFailed, PayloadTooLarge
from hatch_pipeline.export_api.planner import (
    DayExceedsPayloadLimit,
    estimate_daily_bytes,
    export_windows,
    plan_windows,
)
from hatch_pipeline.export_api.windows import MAX_WINDOW_DAYS, ExportWindow

FIRST_DAY = date(2026, 5, 1)
# No deadline: run time is not what these properties check, and a loaded CI machine must not fail them.
properties = settings(max_examples=150, deadline=None)


def days_from(start: date, count: int) -> list[date]:
    return [start + timedelta(days=offset) for offset in range(count)]


def covered_days(windows: list[ExportWindow]) -> list[date]:
    return [day for window in windows for day in window.dates()]


@dataclass(frozen=True)
class PlanningCase:
    start: date
    end: date
    observed: dict[date, float]
    max_payload_bytes: int
    safety_margin: float
    max_window_days: int

    @property
    def days(self) -> list[date]:
        return days_from(self.start, (self.end - self.start).days + 1)

    def plan(self, bytes_per_day: Mapping[date, float]) -> list[ExportWindow]:
        return plan_windows(
            self.start,
            self.end,
            bytes_per_day=bytes_per_day,
            max_payload_bytes=self.max_payload_bytes,
            safety_margin=self.safety_margin,
            max_window_days=self.max_window_days,
        )


@st.composite
def planning_cases(draw: st.DrawFn) -> PlanningCase:
    """A range, observations on some of its days (and some outside it), a payload limit and a window limit."""
    count = draw(st.integers(1, 60))
    start = FIRST_DAY + timedelta(days=draw(st.integers(0, 30)))
    observable = days_from(start - timedelta(days=5), count + 10)
    observed = draw(st.dictionaries(st.sampled_from(observable), st.integers(0, 1_000), max_size=len(observable)))
    return PlanningCase(
        start=start,
        end=start + timedelta(days=count - 1),
        observed={day: float(size) for day, size in observed.items()},
        max_payload_bytes=draw(st.integers(1, 4_000)),
        safety_margin=draw(st.sampled_from([0.5, 0.8, 1.0])),
        max_window_days=draw(st.integers(1, 20)),
    )


def fewest_windows(estimates: list[float], budget: float, max_window_days: int) -> int:
    """Brute-force optimum by dynamic programming over every possible last window."""

    def allowed(first: int, last: int) -> bool:
        days = last - first + 1
        return days == 1 or (days <= max_window_days and math.fsum(estimates[first : last + 1]) <= budget)

    @cache
    def fewest_from(first: int) -> int:
        if first == len(estimates):
            return 0
        return min(1 + fewest_from(last + 1) for last in range(first, len(estimates)) if allowed(first, last))

    return fewest_from(0)


@properties
@given(planning_cases())
def test_plan_covers_each_day_once_in_order_within_limits_and_is_minimal(case: PlanningCase) -> None:
    windows = case.plan(case.observed)

    assert covered_days(windows) == case.days
    assert all(window.days <= case.max_window_days for window in windows)
    estimates = dict(zip(case.days, estimate_daily_bytes(case.start, case.end, case.observed), strict=True))
    budget = case.safety_margin * case.max_payload_bytes
    for window in windows:
        assert window.days == 1 or math.fsum(estimates[day] for day in window.dates()) <= budget
    assert len(windows) == fewest_windows(list(estimates.values()), budget, case.max_window_days)


@pytest.mark.parametrize(("days", "expected_lengths"), [(1, [1]), (180, [180]), (181, [180, 1]), (400, [180, 180, 40])])
def test_with_nothing_observed_the_range_is_cut_only_by_the_window_limit(
    days: int, expected_lengths: list[int]
) -> None:
    end = FIRST_DAY + timedelta(days=days - 1)
    windows = plan_windows(FIRST_DAY, end, bytes_per_day={}, max_payload_bytes=1)

    assert [window.days for window in windows] == expected_lengths
    assert covered_days(windows) == days_from(FIRST_DAY, days)


def test_unobserved_days_are_estimated_at_the_mean_of_the_observations() -> None:
    observed = {FIRST_DAY: 100.0, FIRST_DAY + timedelta(days=2): 300.0, FIRST_DAY - timedelta(days=30): 500.0}

    estimates = estimate_daily_bytes(FIRST_DAY, FIRST_DAY + timedelta(days=3), observed)

    assert estimates == [100.0, 300.0, 300.0, 300.0]


def test_windows_fill_the_budget_exactly() -> None:
    observed = {day: 10.0 for day in days_from(FIRST_DAY, 10)}

    windows = plan_windows(
        FIRST_DAY, FIRST_DAY + timedelta(days=9), bytes_per_day=observed, max_payload_bytes=100, safety_margin=0.5
    )

    assert [window.days for window in windows] == [5, 5]


def test_a_day_over_the_budget_gets_a_window_of_its_own() -> None:
    heavy_day = FIRST_DAY + timedelta(days=2)
    observed = {day: 10.0 for day in days_from(FIRST_DAY, 5)} | {heavy_day: 5_000.0}

    windows = plan_windows(
        FIRST_DAY, FIRST_DAY + timedelta(days=4), bytes_per_day=observed, max_payload_bytes=1_000, safety_margin=0.5
    )

    assert windows == [
        ExportWindow(FIRST_DAY, FIRST_DAY + timedelta(days=1)),
        ExportWindow(heavy_day, heavy_day),
        ExportWindow(heavy_day + timedelta(days=1), FIRST_DAY + timedelta(days=4)),
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"end": FIRST_DAY - timedelta(days=1)}, "before start"),
        ({"max_payload_bytes": 0}, "max_payload_bytes must be positive"),
        ({"safety_margin": 0.0}, "safety_margin must be in"),
        ({"safety_margin": 1.5}, "safety_margin must be in"),
        ({"max_window_days": 0}, "max_window_days must be between"),
        ({"max_window_days": MAX_WINDOW_DAYS + 1}, "max_window_days must be between"),
        ({"bytes_per_day": {FIRST_DAY: -1.0}}, "not a finite, non-negative"),
        ({"bytes_per_day": {FIRST_DAY: math.nan}}, "not a finite, non-negative"),
    ],
)
def test_bad_parameters_are_refused_with_the_rule_they_break(arguments: dict[str, object], message: str) -> None:
    call: dict[str, object] = {"start": FIRST_DAY, "end": FIRST_DAY, "bytes_per_day": {}, "max_payload_bytes": 100}
    with pytest.raises(ValueError, match=message):
        plan_windows(**(call | arguments))  # type: ignore[arg-type]


def vendor(true_bytes: Mapping[date, int], limit: int, source: str) -> Callable[[ExportWindow], int]:
    """A fake export that refuses (413) any window whose true size exceeds the limit, else returns that size."""

    def export(window: ExportWindow) -> int:
        size = sum(true_bytes[day] for day in window.dates())
        if size > limit:
            raise PayloadTooLarge(source, window)
        return size

    return export


@properties
@given(
    sizes=st.lists(st.integers(0, 100), min_size=1, max_size=60),
    limit=st.integers(100, 500),
    window_days=st.integers(1, 60),
)
def test_export_splits_refused_windows_until_every_day_is_exported_once(
    sizes: list[int], limit: int, window_days: int
) -> None:
    true_bytes = dict(zip(days_from(FIRST_DAY, len(sizes)), sizes, strict=True))
    last_day = FIRST_DAY + timedelta(days=len(sizes) - 1)
    windows = plan_windows(FIRST_DAY, last_day, bytes_per_day={}, max_payload_bytes=1, max_window_days=window_days)

    exported = export_windows(windows, vendor(true_bytes, limit, "contact_history"), source="contact_history")

    exported_windows = [window for window, _ in exported.results]
    assert covered_days(exported_windows) == list(true_bytes)
    assert all(size <= limit for _, size in exported.results)
    assert sum(size for _, size in exported.results) == sum(sizes)
    # Each 413 spends one request and turns one window into two.
    assert len(exported.results) == len(windows) + exported.splits
    assert exported.requests == len(windows) + 2 * exported.splits


@properties
@given(planning_cases())
def test_a_plan_from_true_sizes_never_draws_a_413(case: PlanningCase) -> None:
    true_bytes = {day: int(case.observed.get(day, 0)) for day in case.days}
    assume(max(true_bytes.values()) <= case.max_payload_bytes)  # a day alone over the limit must 413 (see below)
    windows = case.plan(true_bytes)

    exported = export_windows(windows, vendor(true_bytes, case.max_payload_bytes, "contact_history"), source="x")

    assert exported.splits == 0
    assert exported.requests == len(windows)


def test_a_single_day_over_the_limit_raises_an_error_naming_the_day_and_the_fix() -> None:
    heavy_day = FIRST_DAY + timedelta(days=2)
    true_bytes = {day: 10 for day in days_from(FIRST_DAY, 4)} | {heavy_day: 1_000}
    export = vendor(true_bytes, 100, "conversation_items")

    with pytest.raises(DayExceedsPayloadLimit) as raised:
        export_windows([ExportWindow(FIRST_DAY, FIRST_DAY + timedelta(days=3))], export, source="conversation_items")

    assert isinstance(raised.value, PayloadTooLarge)
    assert raised.value.day == heavy_day
    message = str(raised.value)
    assert f"single day {heavy_day} of conversation_items" in message
    assert "cannot be split further" in message
    assert "Hatch support" in message


def test_other_errors_propagate_unchanged() -> None:
    failure = ExportFailed("HTTP 503 after 5 attempts")
    attempted: list[ExportWindow] = []

    def export(window: ExportWindow) -> None:
        attempted.append(window)
        if len(attempted) == 2:
            raise failure

    windows = [ExportWindow(day, day) for day in days_from(FIRST_DAY, 3)]
    with pytest.raises(ExportFailed) as raised:
        export_windows(windows, export, source="contact_history")

    assert raised.value is failure
    assert attempted == windows[:2]

"""The planner: fewest windows within the limits, learning sizes within a run, and what a backfill costs.

Pure functions, so the vendor is `simulated_vendor.simulate`: true bytes per day and a payload limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hatch_pipeline.contract import MAX_WINDOW_DAYS, ExportWindow
from hatch_pipeline.export_api.errors import ExportFailed, PayloadTooLarge
from hatch_pipeline.export_api.planner import (
    GROWTH_MARGIN,
    DayExceedsPayloadLimit,
    Sent,
    SizeEvidence,
    estimate_daily_bytes,
    export_days,
    pack_windows,
    plan_windows,
)
from hatch_pipeline_tests.export_api.simulated_vendor import fewest_exports, simulate

FIRST_DAY = date(2026, 5, 1)
# No deadline: run time is not what these properties check, and a loaded CI machine must not fail them.
properties = settings(max_examples=150, deadline=None)


def days_from(start: date, count: int) -> list[date]:
    return [start + timedelta(days=offset) for offset in range(count)]


def covered_days(windows: Sequence[ExportWindow]) -> list[date]:
    return [day for window in windows for day in window.dates()]


def with_margin(true_bytes: dict[date, int]) -> dict[date, int]:
    return {day: math.ceil(size * (1 + GROWTH_MARGIN)) for day, size in true_bytes.items()}


@st.composite
def days_with_gaps(draw: st.DrawFn, max_days: int = 60) -> list[date]:
    """Sorted unique days, some runs of consecutive days apart (stored days leave gaps)."""
    offsets = draw(st.sets(st.integers(0, max_days + 20), min_size=1, max_size=max_days))
    return [FIRST_DAY + timedelta(days=offset) for offset in sorted(offsets)]


def fewest_by_brute_force(
    days: Sequence[date], sizes: Sequence[int], budget: int, max_window_days: int, refused: Sequence[ExportWindow]
) -> int:
    """The optimum by dynamic programming over every possible first window."""

    def allowed(first: int, last: int) -> bool:
        window = ExportWindow(days[first], days[last])
        return first == last or (
            window.days == last - first + 1
            and window.days <= max_window_days
            and sum(sizes[first : last + 1]) <= budget
            and not any(window.start <= other.start and other.end <= window.end for other in refused)
        )

    @cache
    def fewest_from(first: int) -> int:
        if first == len(days):
            return 0
        return min(1 + fewest_from(last + 1) for last in range(first, len(days)) if allowed(first, last))

    return fewest_from(0)


@properties
@given(data=st.data(), days=days_with_gaps(), budget=st.integers(1, 2_000), max_window_days=st.integers(1, 20))
def test_packing_covers_each_day_once_within_limits_and_is_minimal(
    data: st.DataObject, days: list[date], budget: int, max_window_days: int
) -> None:
    sizes = data.draw(st.lists(st.integers(0, 500), min_size=len(days), max_size=len(days)))
    refused = [
        ExportWindow(start, start + timedelta(days=length))
        for start, length in data.draw(st.lists(st.tuples(st.sampled_from(days), st.integers(1, 5)), max_size=3))
    ]

    windows = pack_windows(days, sizes, budget=budget, max_window_days=max_window_days, refused=refused)

    assert covered_days(windows) == days  # in order, each day once, never a day not asked for
    size_of = dict(zip(days, sizes, strict=True))
    for window in windows:
        assert window.days == 1 or (
            window.days <= max_window_days
            and sum(size_of[day] for day in window.dates()) <= budget
            and not any(window.start <= other.start and other.end <= window.end for other in refused)
        )
    assert len(windows) == fewest_by_brute_force(days, sizes, budget, max_window_days, refused)


@pytest.mark.parametrize(("days", "expected_lengths"), [(1, [1]), (14, [14]), (180, [180]), (400, [180, 180, 40])])
def test_with_nothing_known_the_range_is_cut_only_by_the_window_limit(days: int, expected_lengths: list[int]) -> None:
    windows = plan_windows(days_from(FIRST_DAY, days), SizeEvidence(), max_payload_bytes=1)

    assert [window.days for window in windows] == expected_lengths


def test_a_window_never_covers_a_day_that_is_not_asked_for() -> None:
    stored = FIRST_DAY + timedelta(days=5)
    days = [day for day in days_from(FIRST_DAY, 10) if day != stored]

    windows = plan_windows(days, SizeEvidence(), max_payload_bytes=100)

    assert windows == [
        ExportWindow(FIRST_DAY, stored - timedelta(days=1)),
        ExportWindow(stored + timedelta(days=1), days[-1]),
    ]


def test_a_small_range_takes_exactly_one_export_cold() -> None:
    days = days_from(FIRST_DAY, 14)

    backfill = simulate(days, dict.fromkeys(days, 1_000), limit=100_000)

    assert backfill.run.requests == 1
    assert backfill.run.windows == (ExportWindow(days[0], days[-1]),)


def test_warm_windows_share_the_headroom_instead_of_filling_the_first_ones() -> None:
    # 12 days of 10 bytes against 100: two windows are needed; 6 + 6 days leave each 40 % headroom, 9 + 3 only 8 %.
    days = days_from(FIRST_DAY, 12)

    windows = plan_windows(days, SizeEvidence(dict.fromkeys(days, 10.0)), max_payload_bytes=100)

    assert [window.days for window in windows] == [6, 6]


def test_a_day_not_yet_measured_is_estimated_from_the_days_measured_near_it() -> None:
    near, far = FIRST_DAY + timedelta(days=10), FIRST_DAY - timedelta(days=60)
    evidence = SizeEvidence({near - timedelta(days=1): 100.0, near + timedelta(days=3): 300.0, far: 5_000.0})

    [estimate_near, estimate_far] = estimate_daily_bytes(
        [near, far + timedelta(days=30)], evidence, max_payload_bytes=10**9
    )

    assert estimate_near == 200.0  # the mean of the two measured within two weeks; the far one does not count
    assert estimate_far == (100.0 + 300.0 + 5_000.0) / 3  # nothing near: the mean of every measurement


def test_after_a_refusal_with_nothing_measured_the_next_export_probes_one_day() -> None:
    days = days_from(FIRST_DAY, 30)
    refused = SizeEvidence().with_refusal(ExportWindow(days[0], days[-1]))

    windows = plan_windows(days, refused, max_payload_bytes=1_000)

    assert windows[0] == ExportWindow(days[0], days[0])
    assert covered_days(windows) == days


def test_a_refused_window_is_never_planned_again_and_raises_the_estimate_of_its_days() -> None:
    days = days_from(FIRST_DAY, 20)
    evidence = SizeEvidence(dict.fromkeys(days[:10], 10.0))  # 10 bytes a day so far: 20 days would fit in 250
    refused = ExportWindow(days[10], days[19])

    before = plan_windows(days[10:], evidence, max_payload_bytes=250)
    after = plan_windows(days[10:], evidence.with_refusal(refused), max_payload_bytes=250)

    assert before == [refused]
    assert after[0] != refused and len(after) == 2
    raised = estimate_daily_bytes(days[10:], evidence.with_refusal(refused), max_payload_bytes=250)
    assert math.fsum(raised) > 250  # the refusal proved the ten days hold more than the limit


@pytest.mark.parametrize(
    ("days", "arguments", "message"),
    [
        ([FIRST_DAY + timedelta(days=1), FIRST_DAY], {}, "sorted and unique"),
        ([FIRST_DAY, FIRST_DAY], {}, "sorted and unique"),
        ([FIRST_DAY], {"max_payload_bytes": 0}, "max_payload_bytes must be positive"),
        ([FIRST_DAY], {"max_window_days": 0}, "max_window_days must be between"),
        ([FIRST_DAY], {"max_window_days": MAX_WINDOW_DAYS + 1}, "max_window_days must be between"),
    ],
)
def test_bad_parameters_are_refused_with_the_rule_they_break(
    days: list[date], arguments: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan_windows(days, SizeEvidence(), **({"max_payload_bytes": 100} | arguments))


@pytest.mark.parametrize("size", [-1.0, math.nan, math.inf])
def test_evidence_refuses_sizes_that_are_not_byte_counts(size: float) -> None:
    with pytest.raises(ValueError, match="not a finite, non-negative"):
        SizeEvidence({FIRST_DAY: size})


# --- whole backfills against the simulated vendor -------------------------------------------------------------


@properties
@given(data=st.data(), days=days_with_gaps(), max_window_days=st.integers(1, MAX_WINDOW_DAYS))
def test_a_backfill_exports_every_day_exactly_once_within_the_rules(
    data: st.DataObject, days: list[date], max_window_days: int
) -> None:
    limit = data.draw(st.integers(1_000, 50_000))
    sizes = data.draw(st.lists(st.integers(0, limit), min_size=len(days), max_size=len(days)))
    true_bytes = dict(zip(days, sizes, strict=True))

    backfill = simulate(days, true_bytes, limit=limit, max_window_days=max_window_days)

    run = backfill.run
    assert covered_days(run.windows) == days
    assert all(window.days <= max_window_days for window in run.windows)
    assert all(size <= limit for size in backfill.sent_sizes)
    assert sum(backfill.sent_sizes) == sum(sizes)
    assert run.requests == len(run.windows) + run.refusals


@dataclass(frozen=True)
class Profile:
    """True bytes of `days` days: `level` bytes a day times a realistic shape."""

    days: int
    level: int
    shape: str

    def true_bytes(self) -> dict[date, int]:
        sizes = {}
        for offset, day in enumerate(days_from(FIRST_DAY, self.days)):
            factor = 1.0
            if self.shape == "weekly":
                factor = 0.45 if day.weekday() >= 5 else 1.15
            elif self.shape == "growth":
                factor = 1 + offset / self.days
            sizes[day] = round(self.level * factor)
        return sizes


def profiles(shapes: Sequence[str]) -> st.SearchStrategy[Profile]:
    # Levels from under one export for the range to several exports of a few days each.
    return st.builds(Profile, days=st.integers(2, 180), level=st.integers(500, 40_000), shape=st.sampled_from(shapes))


LIMIT = 100_000


@properties
@given(profiles(["flat", "weekly", "growth"]))
def test_a_warm_run_that_knows_each_days_size_takes_the_fewest_exports_and_no_413(profile: Profile) -> None:
    true_bytes = profile.true_bytes()
    days = list(true_bytes)
    fewest = fewest_exports(days, true_bytes, limit=LIMIT, max_window_days=MAX_WINDOW_DAYS)
    # The class where "warm = fewest" holds: the fewest plan leaves every window the growth margin.
    assume(fewest_exports(days, with_margin(true_bytes), limit=LIMIT, max_window_days=MAX_WINDOW_DAYS) == fewest)

    backfill = simulate(
        days, true_bytes, limit=LIMIT, evidence=SizeEvidence({d: float(s) for d, s in true_bytes.items()})
    )

    assert backfill.run.refusals == 0
    assert backfill.run.requests == fewest


@settings(max_examples=60, deadline=None)
@given(profiles(["flat"]))
def test_cold_costs_at_most_two_exports_over_the_fewest_and_warm_then_the_fewest(profile: Profile) -> None:
    true_bytes = profile.true_bytes()
    days = list(true_bytes)
    fewest = fewest_exports(days, true_bytes, limit=LIMIT, max_window_days=MAX_WINDOW_DAYS)
    assume(fewest_exports(days, with_margin(true_bytes), limit=LIMIT, max_window_days=MAX_WINDOW_DAYS) == fewest)

    cold = simulate(days, true_bytes, limit=LIMIT)
    warm = simulate(days, true_bytes, limit=LIMIT, evidence=cold.learnt)

    assert cold.run.requests <= fewest + 2
    assert cold.run.refusals <= 1
    assert (warm.run.requests, warm.run.refusals) == (fewest, 0)


def test_the_issues_21_day_cold_start_costs_one_refusal_and_one_probe_not_a_refusal_per_window() -> None:
    days = days_from(FIRST_DAY, 21)
    true_bytes = dict.fromkeys(days, 21_000)  # 4 days fit in an export: 6 windows at best

    cold = simulate(days, true_bytes, limit=LIMIT)
    warm = simulate(days, true_bytes, limit=LIMIT, evidence=cold.learnt)

    assert fewest_exports(days, true_bytes, limit=LIMIT, max_window_days=MAX_WINDOW_DAYS) == 6
    # The whole range (413), one day (the probe), then 20 days in 5 windows of 4: before, 7 to 8 plus 6 to 7 413s.
    assert (cold.run.requests, cold.run.refusals) == (7, 1)
    assert (warm.run.requests, warm.run.refusals) == (6, 0)


# --- export_days and its send ---------------------------------------------------------------------------------


def test_a_single_day_over_the_limit_raises_an_error_naming_the_day_and_the_fix() -> None:
    days = days_from(FIRST_DAY, 4)
    heavy_day = days[0]

    with pytest.raises(DayExceedsPayloadLimit) as raised:
        simulate(days, dict.fromkeys(days, 10) | {heavy_day: 1_000}, limit=100)

    assert isinstance(raised.value, PayloadTooLarge)
    assert raised.value.day == heavy_day
    message = str(raised.value)
    assert f"single day {heavy_day} of contact_history" in message
    assert "cannot be split further" in message
    assert "Hatch support" in message


def test_other_errors_propagate_unchanged() -> None:
    failure = ExportFailed("HTTP 503 after 5 attempts")
    days = days_from(FIRST_DAY, 3)

    def send(window: ExportWindow) -> Sent:
        raise failure

    with pytest.raises(ExportFailed) as raised:
        export_days(days, send, evidence=SizeEvidence(), max_payload_bytes=100, source="contact_history")

    assert raised.value is failure


def test_days_another_run_stored_meanwhile_cost_nothing_and_are_not_exported_again() -> None:
    days = days_from(FIRST_DAY, 10)
    asked: list[ExportWindow] = []

    def send(window: ExportWindow) -> Sent:
        asked.append(window)
        if len(asked) == 1:  # another run stored the first five days: only the rest is sent
            sent = ExportWindow(days[5], window.end)
            return Sent(covered=frozenset(window.dates()), exported=sent, uncompressed_bytes=50)
        raise AssertionError(f"nothing is left to export, yet {window} was asked for")

    run = export_days(days, send, evidence=SizeEvidence(), max_payload_bytes=100, source="contact_history")

    assert (run.requests, run.refusals, run.windows) == (1, 0, (ExportWindow(days[5], days[9]),))


def test_found_stored_is_not_an_export_and_the_rest_is_planned_again() -> None:
    days = days_from(FIRST_DAY, 4)
    answers = iter([Sent(covered=frozenset(days[:2]), exported=None), None])

    def send(window: ExportWindow) -> Sent:
        answer = next(answers)
        return answer or Sent(covered=frozenset(window.dates()), exported=window, uncompressed_bytes=8)

    run = export_days(days, send, evidence=SizeEvidence(), max_payload_bytes=100, source="contact_history")

    assert (run.requests, run.windows) == (1, (ExportWindow(days[2], days[3]),))


@pytest.mark.parametrize("covered", [frozenset(), frozenset({FIRST_DAY - timedelta(days=1)})])
def test_a_send_that_stores_no_day_of_its_window_is_a_bug_that_stops_the_run(covered: frozenset[date]) -> None:
    def send(window: ExportWindow) -> Sent:
        return Sent(covered=covered, exported=window, uncompressed_bytes=1)

    with pytest.raises(ValueError, match="must store some day of the window"):
        export_days(days_from(FIRST_DAY, 3), send, evidence=SizeEvidence(), max_payload_bytes=100, source="x")

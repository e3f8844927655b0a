"""The catch-up decision as plain Python, on an injected today: which gaps are requested, and why not the others."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Final

from hatch_pipeline.catch_up import CatchUpPlan, Gap, catch_up_window, plan_catch_up
from hatch_pipeline.contract import DATA_SOURCES, DataSource, ExportWindow, earliest_allowed_day

TODAY: Final = date(2026, 11, 26)
"""Injected: the decision reads no clock."""
YESTERDAY: Final = TODAY - timedelta(days=1)
FIRST: Final = YESTERDAY - timedelta(days=29)
"""A 30-day partition set, well inside the vendor's 180 days."""
PARTITIONS: Final = ExportWindow(FIRST, YESTERDAY)


def days(start: int, end: int) -> ExportWindow:
    """Days counted back from yesterday: days(5, 3) is yesterday-5 .. yesterday-3."""
    return ExportWindow(YESTERDAY - timedelta(days=start), YESTERDAY - timedelta(days=end))


def all_but(*gaps: ExportWindow, window: ExportWindow = PARTITIONS) -> set[date]:
    return {day for day in window.dates() if not any(gap.start <= day <= gap.end for gap in gaps)}


def plan(
    landed: Mapping[DataSource, set[date]],
    *,
    unbuilt: Mapping[DataSource, set[date]] | None = None,
    in_flight: Mapping[DataSource, Sequence[ExportWindow]] | None = None,
    exports_left: int = 100,
    requested: Iterable[str] = (),
    first: date = FIRST,
    yesterday_pending: bool = False,
) -> CatchUpPlan:
    earlier = {key: "run abc ended FAILURE" for key in requested}
    return plan_catch_up(
        catch_up_window(first, TODAY, yesterday_pending=yesterday_pending),
        landed=landed,
        unbuilt=unbuilt or {},
        in_flight=in_flight or {},
        exports_left=exports_left,
        earlier_run=earlier.get,
    )


def both(landed: set[date]) -> dict[DataSource, set[date]]:
    return dict.fromkeys(DATA_SOURCES, landed)


def requested(result: CatchUpPlan) -> list[tuple[ExportWindow, dict[DataSource, tuple[ExportWindow, ...]]]]:
    return [(gap.window, dict(gap.missing)) for gap in result.requests]


def test_nothing_missing_requests_nothing_and_says_so() -> None:
    result = plan(both(all_but()))

    assert result.requests == ()
    assert f"Every day from {FIRST} to {YESTERDAY} is landed" in result.explain()


def test_one_gap_is_one_request_for_every_source_missing_it() -> None:
    result = plan(both(all_but(days(6, 4))))

    assert requested(result) == [(days(6, 4), dict.fromkeys(DATA_SOURCES, (days(6, 4),)))]
    [gap] = result.requests
    assert gap.min_exports == 2
    assert f"Requesting {days(6, 4)} (contact_history, conversation_items), at least 2 export(s)" in result.explain()


def test_a_gap_names_only_the_sources_missing_it_and_each_sources_own_days() -> None:
    landed: dict[DataSource, set[date]] = {
        "contact_history": all_but(days(6, 4)),
        "conversation_items": all_but(days(5, 5)),
    }

    [gap] = plan(landed).requests

    assert gap.window == days(6, 4)
    assert dict(gap.missing) == {"contact_history": (days(6, 4),), "conversation_items": (days(5, 5),)}
    assert gap.sources == DATA_SOURCES

    [only] = plan({"contact_history": all_but(), "conversation_items": all_but(days(5, 5))}).requests
    assert (only.window, only.sources, only.min_exports) == (days(5, 5), ("conversation_items",), 1)


def test_two_gaps_are_two_requests_oldest_first() -> None:
    result = plan(both(all_but(days(3, 2), days(20, 18))))

    assert [gap.window for gap in result.requests] == [days(20, 18), days(3, 2)]
    assert len({gap.run_key for gap in result.requests}) == 2


def test_a_failed_day_counts_as_missing() -> None:
    """The caller leaves out of `landed` the days whose latest attempt failed, even if landed before."""
    failed = days(0, 0)

    assert [gap.window for gap in plan(both(all_but(failed))).requests] == [failed]


def test_days_a_queued_or_running_run_covers_are_not_requested() -> None:
    landed = both(all_but(days(6, 2)))

    covered = plan(landed, in_flight={source: (days(8, 1),) for source in DATA_SOURCES})
    assert covered.requests == ()
    assert f"contact_history: {days(6, 2)} will be landed by a queued or running run" in covered.explain()

    partly = plan(landed, in_flight={source: (days(4, 3),) for source in DATA_SOURCES})
    assert [gap.window for gap in partly.requests] == [days(6, 5), days(2, 2)]

    one_source = plan(landed, in_flight={"contact_history": (days(6, 2),)})
    assert [(gap.window, gap.sources) for gap in one_source.requests] == [(days(6, 2), ("conversation_items",))]


def test_no_more_gaps_than_the_exports_left_pay_for() -> None:
    landed = both(all_but(days(20, 18), days(10, 10), days(3, 2)))

    assert [gap.window for gap in plan(landed, exports_left=4).requests] == [days(20, 18), days(10, 10)]

    one_left = plan(landed, exports_left=1)
    assert one_left.requests == ()
    assert [gap.window for gap in one_left.deferred] == [days(20, 18), days(10, 10), days(3, 2)]
    assert "needs at least 2 export(s)" in one_left.explain()

    # A newer one-source gap still fits where the older two-source gap does not.
    fits = plan(
        {"contact_history": all_but(days(20, 18), days(9, 9)), "conversation_items": all_but(days(20, 18))},
        exports_left=1,
    )
    assert [(gap.window, gap.sources) for gap in fits.requests] == [(days(9, 9), ("contact_history",))]
    assert plan(both(all_but(days(3, 2))), exports_left=0).requests == ()


def test_only_days_the_vendor_serves_from_the_first_partition_on_are_requested() -> None:
    earliest = earliest_allowed_day(TODAY)
    first = earliest - timedelta(days=30)
    window = ExportWindow(first, YESTERDAY)
    landed = both(all_but(ExportWindow(first, earliest + timedelta(days=1)), window=window))

    [gap] = plan(landed, first=first).requests
    assert gap.window == ExportWindow(earliest, earliest + timedelta(days=1))

    later_first = earliest + timedelta(days=1)
    [clipped] = plan(landed, first=later_first).requests
    assert clipped.window == ExportWindow(later_first, later_first)
    assert plan({}, first=TODAY).window is None
    assert plan({}, first=TODAY).requests == ()


def test_yesterday_is_left_to_the_daily_schedule_until_it_has_run() -> None:
    landed = both(all_but(days(1, 0)))

    assert [gap.window for gap in plan(landed, yesterday_pending=True).requests] == [days(1, 1)]
    assert [gap.window for gap in plan(landed).requests] == [days(1, 0)]


def test_a_gap_requested_before_is_never_requested_again_and_the_reason_names_the_run() -> None:
    landed = both(all_but(days(6, 4), days(2, 2)))
    first = plan(landed)
    old, new = first.requests

    again = plan(landed, requested=[old.run_key])

    assert [gap.window for gap in again.requests] == [new.window]
    assert [gap.window for gap, _ in again.repeated] == [old.window]
    assert "was requested before (run abc ended FAILURE) and is not requested again" in again.explain()


def test_the_run_key_follows_the_gap_and_its_missing_days() -> None:
    window = days(6, 4)
    gap = Gap(window, dict.fromkeys(DATA_SOURCES, (window,)))

    assert gap.run_key == Gap(window, dict.fromkeys(DATA_SOURCES, (window,))).run_key
    assert gap.run_key != Gap(window, {"contact_history": (window,), "conversation_items": (days(5, 4),)}).run_key
    assert gap.run_key != Gap(window, {"contact_history": (window,)}).run_key
    assert str(window) in gap.run_key


def test_landed_days_a_failed_run_never_built_are_followed_up_at_once_without_exports() -> None:
    """A raw step stored days 9..7 and 5..4, then stopped at the cap for good: its run never built them."""
    unbuilt: dict[DataSource, set[date]] = {"contact_history": {*days(9, 7).dates(), *days(5, 4).dates()}}
    landed: dict[DataSource, set[date]] = {"contact_history": all_but(days(3, 0)), "conversation_items": all_but()}

    result = plan(landed, unbuilt=unbuilt, exports_left=0)

    assert [(follow_up.window, follow_up.sources) for follow_up in result.follow_ups] == [
        (days(9, 7), ("contact_history",)),
        (days(5, 4), ("contact_history",)),
    ]
    assert [gap.window for gap in result.deferred] == [days(3, 0)], "the days still missing wait for exports"
    assert f"Building {days(9, 7)} (contact_history) into Parquet and BigQuery from the stored exports" in (
        result.explain()
    )


def test_a_stretch_both_sources_left_unbuilt_is_one_follow_up_and_a_requested_gap_covers_its_own_days() -> None:
    landed: dict[DataSource, set[date]] = {
        "contact_history": all_but(days(4, 4)),
        "conversation_items": all_but(days(5, 4)),
    }
    unbuilt: dict[DataSource, set[date]] = {
        "contact_history": set(days(7, 5).dates()),
        "conversation_items": set(days(7, 6).dates()),
    }

    result = plan(landed, unbuilt=unbuilt)

    [gap] = result.requests
    assert (gap.window, gap.sources) == (days(5, 4), DATA_SOURCES), "its run rebuilds contact_history's day 5 too"
    assert [(follow_up.window, follow_up.sources) for follow_up in result.follow_ups] == [(days(7, 6), DATA_SOURCES)]


def test_a_follow_up_requested_before_is_never_requested_again_and_the_reason_names_the_run() -> None:
    unbuilt: dict[DataSource, set[date]] = {"contact_history": set(days(9, 7).dates())}
    [follow_up] = plan(both(all_but()), unbuilt=unbuilt).follow_ups

    again = plan(both(all_but()), unbuilt=unbuilt, requested=[follow_up.run_key])

    assert again.follow_ups == ()
    assert [repeated for repeated, _ in again.repeated] == [follow_up]
    assert f"{follow_up} was requested before (run abc ended FAILURE)" in again.explain()

"""Export windows and the date rules of the published contract.

A window is an inclusive range of days, exactly as the vendor's `start_date` / `end_date` parameters are.
The rules live here once; the client checks them before sending and the sandbox answers 400 on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final, Literal, get_args

DataSource = Literal["contact_history", "conversation_items"]
DATA_SOURCES: Final[tuple[DataSource, ...]] = get_args(DataSource)

OutputFormat = Literal["json", "csv"]
OUTPUT_FORMATS: Final[tuple[OutputFormat, ...]] = get_args(OutputFormat)

MAX_WINDOW_DAYS: Final = 180
"""Most days one export may span (inclusive count)."""

MAX_LOOKBACK_DAYS: Final = 180
"""How far back, counted from today, the earliest requested day may lie."""


@dataclass(frozen=True, order=True)
class ExportWindow:
    """An inclusive range of days: `start` through `end`."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"window end {self.end} is before its start {self.start}")

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def dates(self) -> Iterator[date]:
        for offset in range(self.days):
            yield self.start + timedelta(days=offset)

    def split(self) -> tuple[ExportWindow, ExportWindow]:
        """Halve the window (the earlier half takes the odd day); a one-day window cannot be split."""
        if self.days < 2:
            raise ValueError(f"a one-day window ({self}) cannot be split")
        middle = self.start + timedelta(days=(self.days + 1) // 2 - 1)
        return ExportWindow(self.start, middle), ExportWindow(middle + timedelta(days=1), self.end)


def contiguous_windows(days: Iterable[date]) -> list[ExportWindow]:
    """The runs of consecutive days among `days`, as windows in date order (duplicates ignored)."""
    windows: list[ExportWindow] = []
    for day in sorted(set(days)):
        if windows and windows[-1].end + timedelta(days=1) == day:
            windows[-1] = ExportWindow(windows[-1].start, day)
        else:
            windows.append(ExportWindow(day, day))
    return windows


def earliest_allowed_day(today: date) -> date:
    return today - timedelta(days=MAX_LOOKBACK_DAYS)


def latest_allowed_day(today: date) -> date:
    """Data is refreshed nightly: the newest exportable day is yesterday."""
    return today - timedelta(days=1)


def contract_violations(source: str, window: ExportWindow, today: date) -> list[str]:
    """Every way one export request breaks the published date and source rules, as sentences that say the fix."""
    problems: list[str] = []
    if source not in DATA_SOURCES:
        problems.append(f"unknown data_source {source!r}; use one of {', '.join(DATA_SOURCES)}")
    if window.days > MAX_WINDOW_DAYS:
        problems.append(
            f"the range {window} spans {window.days} days; one export may span at most {MAX_WINDOW_DAYS} days"
        )
    return problems + range_violations(window, today)


def range_violations(window: ExportWindow, today: date) -> list[str]:
    """The rules a range of days must keep to be exportable at all, in as many exports as it takes."""
    problems: list[str] = []
    earliest = earliest_allowed_day(today)
    if window.start < earliest:
        problems.append(
            f"start_date {window.start} is more than {MAX_LOOKBACK_DAYS} days back; "
            f"the earliest exportable day today ({today}) is {earliest}"
        )
    latest = latest_allowed_day(today)
    if window.end > latest:
        problems.append(f"end_date {window.end} is not before today ({today}); data holds days up to {latest}")
    return problems


def parse_day(value: str, name: str) -> date:
    """Parse a YYYY-MM-DD parameter, with an error that says which one and what shape it needs."""
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a date in YYYY-MM-DD form") from None

"""What the stages share: days that can never be landed, and the errors that say a stage has nothing to work on."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from hatch_pipeline.contract import MAX_LOOKBACK_DAYS, ExportWindow, earliest_allowed_day
from hatch_pipeline.export_api.errors import HatchExportError


class MissingUpstream(RuntimeError):
    """A stage was asked for days the stage before it has not stored yet."""


class NothingToLand(HatchExportError):
    """Every day of a range has nothing stored and is older than the vendor serves: no stage can produce a thing."""


def lost_reason(today: date) -> str:
    """Why a day with nothing stored, older than the vendor serves, cannot be landed, and what to do about it."""
    earliest = earliest_allowed_day(today)
    return (
        f"nothing is stored for it and the vendor serves only the last {MAX_LOOKBACK_DAYS} days (today, {today}, "
        f"from {earliest}), so it cannot be exported again and stays empty in every stage. Leave days before "
        f"{earliest} that were never landed out of the ranges you launch"
    )


def lost_days(days: ExportWindow, stored: Iterable[date], today: date) -> list[date]:
    """The range's days that nothing stored holds and the vendor no longer serves. Stages skip and report them, so
    the rest of the range lands; when that is every day, NothingToLand says so instead."""
    held = set(stored)
    lost = [day for day in days.dates() if day < earliest_allowed_day(today) and day not in held]
    if len(lost) == days.days:
        raise NothingToLand(f"none of the days {days} can be landed: {lost_reason(today)}.")
    return lost


def quiet(message: str) -> None:
    """The default progress sink: say nothing. Public for the raw and BigQuery stages, which both default to it."""

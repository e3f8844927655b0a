"""The environment-variable contract: every HATCH_* setting, its default, and its validation.

Read once where the Definitions are built. The API key is deliberately not read here: resources take it
through `dagster.EnvVar("HATCH_API_KEY")` so that it never shows in run config or the UI.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, time
from typing import Final, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hatch_pipeline.contract import (
    DATA_SOURCES,
    MAX_LOOKBACK_DAYS,
    OUTPUT_FORMATS,
    DataSource,
    OutputFormat,
)
from hatch_pipeline.export_api.base_url import InvalidBaseUrl, validate_base_url
from hatch_pipeline.schemas import SCHEMAS

DEFAULT_API_BASE_URL = "https://bulk-export-api.usehatchapp.com/api/v1"
DEFAULT_FIRST_PARTITION: Final = date(2026, 6, 1)
"""The first daily partition when HATCH_FIRST_PARTITION is unset: a fixed date, so a reload on another day never
moves the partition set (landed days stay in it). It covers the vendor's 180 days back as of this project's launch
(Dec 2026); older days in it are rebuilt from stored ZIPs or reported as lost. Deployments set their own date
(doctor warns)."""
DEFAULT_SCHEDULE_CRON: Final = "0 6 * * *"
"""The vendor refreshes nightly with the previous day; 06:00 in HATCH_TIMEZONE leaves it time to finish."""
DEFAULT_FRESH_BY: Final = "09:00"
"""By this time of day (HATCH_TIMEZONE) yesterday should be in BigQuery: three hours after the default schedule."""
DEFAULT_LOOKBACK_DAYS: Final = 2
"""The daily run refetches yesterday and this many days before it: late vendor corrections land within days."""
_Num = TypeVar("_Num", int, float)


class SettingsError(ValueError):
    """A HATCH_* variable holds a value the pipeline cannot use; the message names it and the fix."""


@dataclass(frozen=True)
class Settings:
    api_base_url: str = DEFAULT_API_BASE_URL
    output_format: OutputFormat = "json"
    min_export_interval_seconds: float = 300.0
    export_guard_seconds: float | None = None
    """Added to the interval between two requests, for the jitter between the ledger and the vendor's clock of
    arrivals; None: 1 % of the interval (3 s at 300 s)."""
    max_exports_per_day: int = 100
    max_payload_bytes: int = 100_000_000
    timezone: str = "UTC"
    gcs_bucket: str | None = None
    gcs_prefix: str = "hatch"
    bq_project: str | None = None
    bq_dataset: str = "hatch"
    bq_location: str = "US"
    bigquery_emulator_host: str | None = None
    """BIGQUERY_EMULATOR_HOST (Google's name, not a HATCH_* one): BigQuery at a local emulator, anonymously."""
    local_dir: str = ".hatch_local"
    first_partition: str | None = None
    schedule_cron: str = DEFAULT_SCHEDULE_CRON
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    fresh_by: str = DEFAULT_FRESH_BY
    alert_webhook: str | None = field(default=None, repr=False)
    """HATCH_ALERT_WEBHOOK: where a failed run posts its alert (off when unset). Kept out of repr: a webhook URL
    holds its own secret."""
    contact_history_date_column: str | None = None
    conversation_items_date_column: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment (unset or empty variables take their defaults)."""
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = source.get(name, "").strip()
            return value or None

        defaults = cls()
        settings = cls(
            api_base_url=get("HATCH_API_BASE_URL") or defaults.api_base_url,
            output_format=cast(OutputFormat, get("HATCH_OUTPUT_FORMAT") or defaults.output_format),
            min_export_interval_seconds=_number(
                "HATCH_MIN_EXPORT_INTERVAL_SECONDS",
                get("HATCH_MIN_EXPORT_INTERVAL_SECONDS"),
                defaults.min_export_interval_seconds,
                float,
            ),
            export_guard_seconds=_optional_number("HATCH_EXPORT_GUARD_SECONDS", get("HATCH_EXPORT_GUARD_SECONDS")),
            max_exports_per_day=_number(
                "HATCH_MAX_EXPORTS_PER_DAY", get("HATCH_MAX_EXPORTS_PER_DAY"), defaults.max_exports_per_day, int
            ),
            max_payload_bytes=_number(
                "HATCH_MAX_PAYLOAD_BYTES", get("HATCH_MAX_PAYLOAD_BYTES"), defaults.max_payload_bytes, int
            ),
            timezone=get("HATCH_TIMEZONE") or defaults.timezone,
            gcs_bucket=get("HATCH_GCS_BUCKET"),
            gcs_prefix=(get("HATCH_GCS_PREFIX") or defaults.gcs_prefix).strip("/"),
            bq_project=get("HATCH_BQ_PROJECT"),
            bq_dataset=get("HATCH_BQ_DATASET") or defaults.bq_dataset,
            bq_location=get("HATCH_BQ_LOCATION") or defaults.bq_location,
            bigquery_emulator_host=get("BIGQUERY_EMULATOR_HOST"),
            local_dir=get("HATCH_LOCAL_DIR") or defaults.local_dir,
            first_partition=get("HATCH_FIRST_PARTITION"),
            schedule_cron=get("HATCH_SCHEDULE_CRON") or defaults.schedule_cron,
            lookback_days=_number("HATCH_LOOKBACK_DAYS", get("HATCH_LOOKBACK_DAYS"), defaults.lookback_days, int),
            fresh_by=get("HATCH_FRESH_BY") or defaults.fresh_by,
            alert_webhook=get("HATCH_ALERT_WEBHOOK"),
            contact_history_date_column=get("HATCH_CONTACT_HISTORY_DATE_COLUMN"),
            conversation_items_date_column=get("HATCH_CONVERSATION_ITEMS_DATE_COLUMN"),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise SettingsError(
                f"HATCH_OUTPUT_FORMAT={self.output_format!r} is not supported; use one of {', '.join(OUTPUT_FORMATS)}"
            )
        try:
            validate_base_url(self.api_base_url)
        except InvalidBaseUrl as error:
            raise SettingsError(str(error)) from None
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(
                f"HATCH_TIMEZONE={self.timezone!r} is not an IANA time zone; use a name such as UTC or Europe/Berlin"
            ) from None
        if self.min_export_interval_seconds < 0:
            raise SettingsError("HATCH_MIN_EXPORT_INTERVAL_SECONDS must be zero or more")
        if self.export_guard_seconds is not None and self.export_guard_seconds < 0:
            raise SettingsError("HATCH_EXPORT_GUARD_SECONDS must be zero or more (unset: 1 % of the interval)")
        if self.max_exports_per_day < 1:
            raise SettingsError("HATCH_MAX_EXPORTS_PER_DAY must be at least 1")
        if self.max_payload_bytes < 1:
            raise SettingsError("HATCH_MAX_PAYLOAD_BYTES must be at least 1")
        for source in DATA_SOURCES:
            allowed = SCHEMAS[source].timestamp_columns
            if self.date_column(source) not in allowed:
                raise SettingsError(
                    f"HATCH_{source.upper()}_DATE_COLUMN={self.date_column(source)!r} is not a timestamp column of "
                    f"{source}; use one of {', '.join(allowed)}"
                )
        if self.first_partition is not None:
            try:
                date.fromisoformat(self.first_partition)
            except ValueError:
                raise SettingsError(
                    f"HATCH_FIRST_PARTITION={self.first_partition!r} is not a date; use YYYY-MM-DD"
                ) from None

        if len(self.schedule_cron.split()) != 5:
            raise SettingsError(
                f"HATCH_SCHEDULE_CRON={self.schedule_cron!r} is not a cron string of five fields; use e.g. "
                f"{DEFAULT_SCHEDULE_CRON!r} (minute hour day month weekday, in HATCH_TIMEZONE)"
            )
        if not 0 <= self.lookback_days < MAX_LOOKBACK_DAYS:
            raise SettingsError(
                f"HATCH_LOOKBACK_DAYS={self.lookback_days} is out of range; use 0 (yesterday only) up to "
                f"{MAX_LOOKBACK_DAYS - 1} (the vendor serves {MAX_LOOKBACK_DAYS} days back)"
            )

        try:
            self.fresh_by_time  # noqa: B018 (parsing is the validation)
        except ValueError:
            raise SettingsError(
                f"HATCH_FRESH_BY={self.fresh_by!r} is not a time of day; use HH:MM, e.g. {DEFAULT_FRESH_BY!r} "
                "(in HATCH_TIMEZONE)"
            ) from None

    @property
    def fresh_by_time(self) -> time:
        """HATCH_FRESH_BY as a time of day: by then each table should hold yesterday (the freshness check)."""
        if not re.fullmatch(r"\d{2}:\d{2}", self.fresh_by):
            raise ValueError(f"{self.fresh_by!r} is not HH:MM")
        return time.fromisoformat(self.fresh_by)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def date_column(self, source: DataSource) -> str:
        """The timestamp that assigns a source's rows to days: HATCH_<SOURCE>_DATE_COLUMN, else the default."""
        chosen = getattr(self, f"{source}_date_column")
        return chosen if isinstance(chosen, str) else SCHEMAS[source].date_column

    @property
    def first_partition_day(self) -> date:
        """The first daily partition: HATCH_FIRST_PARTITION, else DEFAULT_FIRST_PARTITION; never the clock."""
        if self.first_partition is not None:
            return date.fromisoformat(self.first_partition)
        return DEFAULT_FIRST_PARTITION

    @property
    def ledger_url(self) -> str:
        """The rate ledger lives next to the data: in the bucket when there is one, else in the local folder."""
        if self.gcs_bucket:
            return f"gs://{self.gcs_bucket}/{self.gcs_prefix}"
        return f"{self.local_dir}/ledger"


def _optional_number(name: str, raw: str | None) -> float | None:
    return None if raw is None else _number(name, raw, 0.0, float)


def _number(name: str, raw: str | None, default: _Num, kind: type[_Num]) -> _Num:
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a {kind.__name__}") from None

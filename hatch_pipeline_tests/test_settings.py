"""The HATCH_* environment contract: defaults, parsing, and errors that name the variable and the fix."""

from __future__ import annotations

from datetime import time

import pytest

from hatch_pipeline.settings import DEFAULT_API_BASE_URL, Settings, SettingsError


def test_defaults_match_the_documented_contract() -> None:
    settings = Settings.from_env({})

    assert settings.api_base_url == DEFAULT_API_BASE_URL
    assert settings.output_format == "json"
    assert settings.min_export_interval_seconds == 300
    assert settings.max_exports_per_day == 100
    assert settings.max_payload_bytes == 100_000_000
    assert settings.timezone == "UTC"
    assert (settings.gcs_prefix, settings.bq_dataset, settings.bq_location) == ("hatch", "hatch", "US")
    assert settings.gcs_bucket is None and settings.bq_project is None
    assert (settings.schedule_cron, settings.lookback_days) == ("0 6 * * *", 2)
    assert settings.fresh_by_time == time(9, 0)


def test_values_are_read_and_typed() -> None:
    settings = Settings.from_env(
        {
            "HATCH_OUTPUT_FORMAT": "csv",
            "HATCH_MIN_EXPORT_INTERVAL_SECONDS": "2.5",
            "HATCH_MAX_EXPORTS_PER_DAY": "7",
            "HATCH_TIMEZONE": "America/Los_Angeles",
            "HATCH_GCS_BUCKET": "acme-raw",
            "HATCH_GCS_PREFIX": "/vendors/hatch/",
            "HATCH_API_BASE_URL": "http://127.0.0.1:8080/api/v1",
        }
    )

    assert settings.output_format == "csv"
    assert settings.min_export_interval_seconds == 2.5
    assert settings.max_exports_per_day == 7
    assert settings.zone.key == "America/Los_Angeles"
    assert settings.gcs_bucket == "acme-raw"
    assert settings.gcs_prefix == "vendors/hatch"


def test_each_source_can_assign_rows_to_days_by_another_timestamp() -> None:
    settings = Settings.from_env({"HATCH_CONVERSATION_ITEMS_DATE_COLUMN": "updated_at"})

    assert settings.date_column("conversation_items") == "updated_at"
    assert settings.date_column("contact_history") == "updated_at"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("HATCH_OUTPUT_FORMAT", "xml", "HATCH_OUTPUT_FORMAT='xml' is not supported; use one of json, csv"),
        ("HATCH_MAX_EXPORTS_PER_DAY", "many", "HATCH_MAX_EXPORTS_PER_DAY='many' is not a int"),
        ("HATCH_MAX_EXPORTS_PER_DAY", "0", "HATCH_MAX_EXPORTS_PER_DAY must be at least 1"),
        ("HATCH_TIMEZONE", "Mars/Olympus", "is not an IANA time zone"),
        ("HATCH_API_BASE_URL", "http://api.example.com/v1", "must use https unless the host is loopback"),
        ("HATCH_API_BASE_URL", "ftp://example.com", "is not an http(s) URL"),
        ("HATCH_FIRST_PARTITION", "June", "HATCH_FIRST_PARTITION='June' is not a date; use YYYY-MM-DD"),
        ("HATCH_SCHEDULE_CRON", "daily", "HATCH_SCHEDULE_CRON='daily' is not a cron string of five fields; use e.g."),
        ("HATCH_LOOKBACK_DAYS", "-1", "HATCH_LOOKBACK_DAYS=-1 is out of range; use 0 (yesterday only) up to 179"),
        ("HATCH_LOOKBACK_DAYS", "180", "HATCH_LOOKBACK_DAYS=180 is out of range"),
        ("HATCH_LOOKBACK_DAYS", "two", "HATCH_LOOKBACK_DAYS='two' is not a int"),
        ("HATCH_FRESH_BY", "9am", "HATCH_FRESH_BY='9am' is not a time of day; use HH:MM, e.g. '09:00'"),
        ("HATCH_FRESH_BY", "25:00", "HATCH_FRESH_BY='25:00' is not a time of day"),
        (
            "HATCH_CONVERSATION_ITEMS_DATE_COLUMN",
            "body",
            "HATCH_CONVERSATION_ITEMS_DATE_COLUMN='body' is not a timestamp column of conversation_items; "
            "use one of created_at, updated_at",
        ),
    ],
)
def test_bad_values_name_the_variable_and_the_fix(variable: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env({variable: value})

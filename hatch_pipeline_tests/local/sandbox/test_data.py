"""The sandbox's synthetic data: deterministic, realistic, and shaped like the vendor's export."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest

from hatch_pipeline.contract import DATA_SOURCES, DataSource, ExportWindow
from hatch_pipeline.local.sandbox.data import (
    CONTACT_HISTORY_COLUMNS,
    CONVERSATION_ITEMS_COLUMNS,
    NEW_CONTACT_HISTORY_COLUMNS,
    SandboxConfig,
    columns_for,
    row_count,
    rows_for_day,
    timestamp,
)

DAY = date(2026, 3, 14)
CONFIG = SandboxConfig(rows_per_day=200)
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DATE_COLUMN = {"contact_history": "updated_at", "conversation_items": "created_at"}


def parse_timestamp(value: object) -> datetime:
    assert isinstance(value, str) and TIMESTAMP.match(value), value
    return datetime.fromisoformat(value)


@pytest.mark.parametrize("source", DATA_SOURCES)
def test_same_inputs_give_the_same_rows_and_another_seed_gives_others(source: DataSource) -> None:
    first = list(rows_for_day(source, DAY, CONFIG))
    assert first == list(rows_for_day(source, DAY, CONFIG))
    assert first != list(rows_for_day(source, DAY, replace(CONFIG, seed=1)))
    assert first != list(rows_for_day(source, DAY + timedelta(days=1), CONFIG))


@pytest.mark.parametrize("source", DATA_SOURCES)
def test_every_day_holds_exactly_rows_per_day_except_empty_days(source: DataSource) -> None:
    config = replace(CONFIG, rows_per_day=37, empty_days=frozenset({DAY}))
    assert len(list(rows_for_day(source, DAY - timedelta(days=1), config))) == 37
    assert list(rows_for_day(source, DAY, config)) == []
    assert row_count(ExportWindow(DAY - timedelta(days=2), DAY), config) == 74


@pytest.mark.parametrize("source", DATA_SOURCES)
def test_rows_belong_to_their_day_and_some_sit_seconds_from_midnight(source: DataSource) -> None:
    moments = [parse_timestamp(row[DATE_COLUMN[source]]) for row in rows_for_day(source, DAY, CONFIG)]
    midnight = datetime(DAY.year, DAY.month, DAY.day, tzinfo=moments[0].tzinfo)
    assert all(moment.date() == DAY for moment in moments)
    assert moments == sorted(moments)
    assert any(moment - midnight < timedelta(seconds=3) for moment in moments)
    assert any(midnight + timedelta(days=1) - moment <= timedelta(seconds=3) for moment in moments)


def test_conversation_items_are_updated_no_earlier_than_created() -> None:
    rows = list(rows_for_day("conversation_items", DAY, CONFIG))
    assert all(parse_timestamp(row["updated_at"]) >= parse_timestamp(row["created_at"]) for row in rows)
    assert any(parse_timestamp(row["updated_at"]) > parse_timestamp(row["created_at"]) for row in rows)


@pytest.mark.parametrize(
    ("source", "columns"),
    [("contact_history", CONTACT_HISTORY_COLUMNS), ("conversation_items", CONVERSATION_ITEMS_COLUMNS)],
)
def test_rows_carry_the_published_columns_in_order(source: DataSource, columns: tuple[str, ...]) -> None:
    for row in rows_for_day(source, DAY, CONFIG):
        assert tuple(row) == columns


def test_ids_are_strings_and_some_have_leading_zeros_a_numeric_parse_would_lose() -> None:
    rows = list(rows_for_day("contact_history", DAY, CONFIG))
    ids = [row[column] for row in rows for column in ("workspace_id", "hatch_contact_id")]
    assert all(isinstance(value, str) for value in ids)
    assert any(str(value).startswith("0") for value in ids)
    items = list(rows_for_day("conversation_items", DAY, CONFIG))
    assert any(str(row["id"]).startswith("0") for row in items)


def test_contact_history_values_look_like_the_vendors() -> None:
    rows = list(rows_for_day("contact_history", DAY, CONFIG))
    assert {row["contact_status"] for row in rows} == {"In Progress", "No Reply", "Replied", "Canceled"}
    assert {type(row["opted_out"]) for row in rows} == {bool}
    sales = [row["sales_value"] for row in rows]
    assert None in sales and any(isinstance(value, float) for value in sales)
    phones = [row["phone"] for row in rows]
    assert None in phones
    assert any(re.fullmatch(r"\+1\d{10}", str(phone)) for phone in phones)
    assert any(re.fullmatch(r"0\d{10}", str(phone)) for phone in phones)


def test_conversation_bodies_hold_what_breaks_naive_csv_handling() -> None:
    rows = list(rows_for_day("conversation_items", DAY, CONFIG))
    bodies = [row["body"] for row in rows]
    texts = [body for body in bodies if isinstance(body, str)]
    assert None in bodies
    assert "" not in texts  # an empty CSV field must always mean null
    for needle in (",", '"', "\n", "\r\n", "👍", "ñ"):
        assert any(needle in text for text in texts), needle
    assert {row["category"] for row in rows} == {"sms", "email", "call"}
    assert {row["direction"] for row in rows} == {"inbound", "outbound"}


def test_new_columns_appear_from_the_configured_day_without_changing_other_values() -> None:
    switch = DAY
    config = replace(CONFIG, new_columns_from=switch)
    before = list(rows_for_day("contact_history", switch - timedelta(days=1), config))
    after = list(rows_for_day("contact_history", switch, config))
    assert all(not set(NEW_CONTACT_HISTORY_COLUMNS) & set(row) for row in before)
    assert all(tuple(row)[-3:] == NEW_CONTACT_HISTORY_COLUMNS for row in after)
    assert any(row["invoice_id"] is not None for row in after)
    assert any(row["external_contact_id"] is None for row in after)
    without = list(rows_for_day("contact_history", switch, CONFIG))
    assert [{key: row[key] for key in CONTACT_HISTORY_COLUMNS} for row in after] == without


def test_csv_header_has_the_new_columns_once_the_window_reaches_the_switch_day() -> None:
    config = replace(CONFIG, new_columns_from=DAY)
    assert columns_for("contact_history", ExportWindow(DAY - timedelta(days=3), DAY - timedelta(days=1)), config) == (
        CONTACT_HISTORY_COLUMNS
    )
    spanning = ExportWindow(DAY - timedelta(days=1), DAY)
    assert columns_for("contact_history", spanning, config) == CONTACT_HISTORY_COLUMNS + NEW_CONTACT_HISTORY_COLUMNS
    assert columns_for("conversation_items", spanning, config) == CONVERSATION_ITEMS_COLUMNS


def test_the_organization_only_fills_its_own_columns() -> None:
    mine = list(rows_for_day("conversation_items", DAY, CONFIG, "org-a"))
    theirs = list(rows_for_day("conversation_items", DAY, CONFIG, "org-b"))
    assert {row["organization_id"] for row in mine} == {"org-a"}
    own = {"organization_id", "organization_name"}
    assert [{k: v for k, v in row.items() if k not in own} for row in mine] == [
        {k: v for k, v in row.items() if k not in own} for row in theirs
    ]


def test_timestamps_have_milliseconds_and_roll_over_midnight() -> None:
    assert timestamp(DAY, 0) == "2026-03-14T00:00:00.000Z"
    assert timestamp(DAY, 86_399_999) == "2026-03-14T23:59:59.999Z"
    assert timestamp(DAY, 86_400_001) == "2026-03-15T00:00:00.001Z"


def test_config_rejects_impossible_values_and_hides_keys_from_its_repr() -> None:
    with pytest.raises(ValueError, match="rows_per_day"):
        SandboxConfig(rows_per_day=-1)
    with pytest.raises(ValueError, match="max_exports_per_day"):
        SandboxConfig(max_exports_per_day=0)
    assert "secret-key-123" not in repr(SandboxConfig(api_keys={"secret-key-123": "org"}))

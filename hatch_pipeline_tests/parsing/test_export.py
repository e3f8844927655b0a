"""ZIP → per-day Parquet: types, columns, day assignment, malformed input. Real files in tmp dirs, no mocks."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from hatch_pipeline.contract import DataSource, ExportWindow, OutputFormat
from hatch_pipeline.parsing.export import ParsedExport, parse_export
from hatch_pipeline.parsing.member import PART_BYTES, MalformedExport
from hatch_pipeline.schemas import LINEAGE_COLUMNS, SCHEMAS

Row = Mapping[str, object]
LOADED_AT = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
NOV_20 = ExportWindow(date(2026, 11, 20), date(2026, 11, 20))
NOV_19_TO_21 = ExportWindow(date(2026, 11, 19), date(2026, 11, 21))
SMALL_PARTS = 1_000
"""Bytes per part for tests that parse a file in many parts of a few rows each, as a large export is parsed."""


def member_name(source: DataSource, window: ExportWindow, fmt: OutputFormat) -> str:
    return f"{source}_{window.start.isoformat()}_{window.end.isoformat()}.{fmt}"


def ndjson_text(rows: Sequence[Row]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def csv_text(rows: Sequence[Row]) -> str:
    """CSV as the vendor writes it: a header of every key, empty field for null, booleans as true/false."""
    header = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_field(row.get(key)) for key in header])
    return buffer.getvalue()


def csv_field(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_zip(path: Path, member: str, text: str) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, text.encode("utf-8"))
    return path


def export_zip(
    tmp_path: Path, source: DataSource, window: ExportWindow, rows: Sequence[Row], fmt: OutputFormat = "json"
) -> Path:
    text = ndjson_text(rows) if fmt == "json" else csv_text(rows)
    return write_zip(tmp_path / f"raw-{fmt}.zip", member_name(source, window, fmt), text)


def parse(
    zip_path: Path,
    out_dir: Path,
    source: DataSource = "contact_history",
    window: ExportWindow = NOV_20,
    timezone: str = "UTC",
    date_column: str | None = None,
    part_bytes: int = PART_BYTES,
) -> ParsedExport:
    return parse_export(
        zip_path,
        source=source,
        window=window,
        out_dir=out_dir,
        timezone=timezone,
        source_file=f"gs://bucket/hatch/raw/{zip_path.name}",
        loaded_at=LOADED_AT,
        date_column=date_column,
        part_bytes=part_bytes,
    )


def read_all(parsed: ParsedExport) -> pl.DataFrame:
    frames = [pl.read_parquet(day.path, hive_partitioning=False) for day in parsed.days if day.path is not None]
    return pl.concat(frames)


def contact(contact_history_id: str, updated_at: str | None, **more: object) -> dict[str, object]:
    return {
        "organization_id": "007",
        "organization_name": "Acme",
        "workspace_id": "0042",
        "workspace_name": "Main",
        "contact_history_id": contact_history_id,
        "campaign_id": "c1",
        "campaign_name": "Fall",
        "current_lead_source": "web",
        "hatch_contact_id": "00123",
        "contact_status": "Replied",
        "campaign_stage": "2",
        "sales_value": 12.5,
        "opted_out": False,
        "email": "a@example.com",
        "phone": "+0014155550100",
        "updated_at": updated_at,
        **more,
    }


def item(item_id: str, created_at: str | None, body: str | None = "hi", **more: object) -> dict[str, object]:
    return {
        "organization_id": "007",
        "organization_name": "Acme",
        "workspace_id": "0042",
        "workspace_name": "Main",
        "id": item_id,
        "conversation_id": "000981",
        "contact_id": "0555",
        "actor_type": "user",
        "actor_id": "u1",
        "category": "sms",
        "type": "message",
        "direction": "outbound",
        "body": body,
        "delivery_status": "delivered",
        "created_at": created_at,
        "updated_at": "2026-11-21T00:00:00Z",
        **more,
    }


def test_documented_columns_get_their_types_and_ids_keep_leading_zeros(tmp_path: Path) -> None:
    rows = [
        contact("0001", "2026-11-20T23:59:58.123Z", opted_out=True),
        contact("0002", "2026-11-20T10:00:00+02:00", sales_value=None, opted_out=None, phone="0044207946000"),
    ]
    parsed = parse(export_zip(tmp_path, "contact_history", NOV_20, rows), tmp_path / "out")

    frame = read_all(parsed)
    assert frame.schema["updated_at"] == pl.Datetime("us", "UTC")
    assert frame.schema["opted_out"] == pl.Boolean
    assert frame.schema["sales_value"] == pl.Float64
    for text_column in ("organization_id", "contact_history_id", "hatch_contact_id", "phone", "campaign_stage"):
        assert frame.schema[text_column] == pl.String
    assert frame["contact_history_id"].to_list() == ["0001", "0002"]
    assert frame["hatch_contact_id"].to_list() == ["00123", "00123"]
    assert frame["phone"].to_list() == ["+0014155550100", "0044207946000"]
    assert frame["opted_out"].to_list() == [True, None]
    assert frame["sales_value"].to_list() == [12.5, None]
    assert frame["updated_at"].to_list() == [
        datetime(2026, 11, 20, 23, 59, 58, 123000, tzinfo=UTC),
        datetime(2026, 11, 20, 8, 0, tzinfo=UTC),
    ]


def test_lineage_columns_come_last_with_the_values_passed_in(tmp_path: Path) -> None:
    zip_path = export_zip(tmp_path, "contact_history", NOV_20, [contact("1", "2026-11-20T12:00:00Z", zeta="z")])
    parsed = parse(zip_path, tmp_path / "out")

    frame = read_all(parsed)
    expected_columns = [*SCHEMAS["contact_history"].columns, "zeta", *LINEAGE_COLUMNS]
    assert frame.columns == expected_columns
    assert list(parsed.columns) == expected_columns
    assert frame.schema["_export_date"] == pl.Date
    assert frame.schema["_loaded_at"] == pl.Datetime("us", "UTC")
    lineage = frame.select(LINEAGE_COLUMNS).row(0)
    assert lineage == (date(2026, 11, 20), "gs://bucket/hatch/raw/raw-json.zip", LOADED_AT)
    assert parsed.days[0].path == tmp_path / "out" / "export_date=2026-11-20.parquet"


FIDELITY_BODIES = [
    'She said "yes, tomorrow"\nand then, after a pause,\r\n"no".',
    "Ünïcödé ✓ 🙂 — 日本語",
    "",
    None,
    "  leading and trailing spaces  ",
    "comma, only",
    "line\u2028separator and paragraph\u2029separator",
    "long " * 60_000,  # 300 kB, more than Python's csv default field limit
]


def fidelity_frames(tmp_path: Path) -> dict[OutputFormat, pl.DataFrame]:
    rows = [
        item(f"{index:05d}", f"2026-11-{19 + index % 3}T0{index}:30:00.5Z", body, later=f"x{index}" if index else None)
        for index, body in enumerate(FIDELITY_BODIES)
    ]
    frames: dict[OutputFormat, pl.DataFrame] = {}
    for fmt in ("json", "csv"):
        zip_path = export_zip(tmp_path, "conversation_items", NOV_19_TO_21, rows, fmt)
        parsed = parse(zip_path, tmp_path / fmt, source="conversation_items", window=NOV_19_TO_21)
        frames[fmt] = read_all(parsed).sort("id")
    return frames


def test_json_keeps_every_value_as_sent_with_empty_strings_apart_from_null(tmp_path: Path) -> None:
    frame = fidelity_frames(tmp_path)["json"]

    assert frame["body"].to_list() == FIDELITY_BODIES
    assert frame["later"].to_list() == [None, *(f"x{index}" for index in range(1, len(FIDELITY_BODIES)))]


def test_csv_gives_the_json_values_except_empty_strings_which_it_cannot_tell_from_null(tmp_path: Path) -> None:
    frames = fidelity_frames(tmp_path)

    assert frames["csv"]["body"].to_list() == [None if body == "" else body for body in FIDELITY_BODIES]
    assert_frame_equal(frames["json"].drop("body", "_source_file"), frames["csv"].drop("body", "_source_file"))


def test_a_quoted_empty_csv_field_is_an_empty_string_and_an_unquoted_one_null(tmp_path: Path) -> None:
    text = 'contact_history_id,email,phone,updated_at\r\n1,"",,2026-11-20T12:00:00Z\r\n'
    zip_path = write_zip(tmp_path / "raw.zip", member_name("contact_history", NOV_20, "csv"), text)

    frame = read_all(parse(zip_path, tmp_path / "out"))

    assert frame.select("email", "phone").row(0) == ("", None)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path, fmt: OutputFormat) -> None:
    rows = [contact("0001", "2026-11-20T12:00:00Z")]
    text = "\ufeff" + (ndjson_text(rows) if fmt == "json" else csv_text(rows))
    zip_path = write_zip(tmp_path / "raw.zip", member_name("contact_history", NOV_20, fmt), text)

    frame = read_all(parse(zip_path, tmp_path / "out"))

    assert frame.columns == [*SCHEMAS["contact_history"].columns, *LINEAGE_COLUMNS]
    assert frame["organization_id"].to_list() == ["007"]


def test_json_numbers_and_booleans_become_their_documented_types_and_text_elsewhere(tmp_path: Path) -> None:
    row = contact("0001", "2026-11-20T12:00:00Z", sales_value="12.50", opted_out="true", hatch_contact_id=123)
    row |= {"campaign_stage": 2, "score": 12345678901234567890, "flags": [1, "a"]}
    parsed = parse(export_zip(tmp_path, "contact_history", NOV_20, [row]), tmp_path / "out")

    frame = read_all(parsed)
    assert frame.select("sales_value", "opted_out", "hatch_contact_id", "campaign_stage").row(0) == (
        12.5,
        True,
        "123",
        "2",
    )
    assert frame.select("score", "flags").row(0) == ("12345678901234567890", '[1, "a"]')  # the JSON text as sent
    assert parsed.text_columns == {"score": "Int128", "flags": "List(String)"}


def test_a_vendor_column_that_changes_type_between_exports_keeps_every_value_as_text(tmp_path: Path) -> None:
    numbers = parse(
        export_zip(tmp_path, "contact_history", NOV_20, [contact("1", "2026-11-20T12:00:00Z", rank=7)]),
        tmp_path / "a",
    )
    words = parse(
        export_zip(tmp_path, "contact_history", NOV_20, [contact("2", "2026-11-20T12:00:00Z", rank="first")]),
        tmp_path / "b",
    )

    assert read_all(numbers)["rank"].to_list() == ["7"]
    assert read_all(words)["rank"].to_list() == ["first"]
    assert pl.read_parquet_schema(numbers.days[0].path or "")["rank"] == pl.String
    assert numbers.text_columns == {"rank": "Int64"}
    assert words.text_columns == {}


def test_a_column_first_seen_deep_in_ndjson_is_kept_as_text_and_null_elsewhere(tmp_path: Path) -> None:
    rows = [contact(f"{index:04d}", "2026-11-20T12:00:00Z") for index in range(500)]
    rows[0] = contact("0000", "2026-11-20T12:00:00Z", early_only=1)
    rows[450] = contact("0450", "2026-11-20T12:00:00Z", vendor_added="00777", another={"nested": True})
    parsed = parse(export_zip(tmp_path, "contact_history", NOV_20, rows), tmp_path / "out")

    frame = read_all(parsed)
    assert parsed.rows == frame.height == 500
    assert frame.columns[-6:] == ["another", "early_only", "vendor_added", *LINEAGE_COLUMNS]
    assert frame.schema["vendor_added"] == pl.String
    assert frame.schema["early_only"] == pl.String
    assert frame.filter(pl.col("vendor_added").is_not_null())["contact_history_id"].to_list() == ["0450"]
    assert frame.filter(pl.col("contact_history_id") == "0450")["vendor_added"].item() == "00777"
    assert frame["early_only"].to_list() == ["1", *[None] * 499]
    assert json.loads(frame["another"][450]) == {"nested": True}


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_a_file_parsed_in_many_parts_gives_the_same_files_as_in_one(tmp_path: Path, fmt: OutputFormat) -> None:
    # Days interleaved, bodies with quotes, commas and line breaks: parts end inside every kind of text.
    bodies = FIDELITY_BODIES[:-1]
    rows = [
        item(f"{index:03d}", f"2026-11-{19 + index % 3}T{index % 24:02d}:00:00Z", bodies[index % len(bodies)])
        for index in range(90)
    ]
    zip_path = export_zip(tmp_path, "conversation_items", NOV_19_TO_21, rows, fmt)
    whole = parse(zip_path, tmp_path / "whole", source="conversation_items", window=NOV_19_TO_21)
    in_parts = parse(
        zip_path, tmp_path / "parts", source="conversation_items", window=NOV_19_TO_21, part_bytes=SMALL_PARTS
    )

    assert [(day.day, day.rows) for day in in_parts.days] == [(day.day, day.rows) for day in whole.days]
    for one, many in zip(whole.days, in_parts.days, strict=True):
        assert_frame_equal(pl.read_parquet(many.path or ""), pl.read_parquet(one.path or ""))


def test_a_key_first_seen_in_a_later_part_is_kept(tmp_path: Path) -> None:
    rows = [contact(f"{index:04d}", "2026-11-20T12:00:00Z") for index in range(60)]
    rows[45] = contact("0045", "2026-11-20T12:00:00Z", vendor_added="00777", late_number=7)
    parsed = parse(export_zip(tmp_path, "contact_history", NOV_20, rows), tmp_path / "out", part_bytes=SMALL_PARTS)

    frame = read_all(parsed)
    assert parsed.rows == frame.height == 60
    assert frame.columns[-5:] == ["late_number", "vendor_added", *LINEAGE_COLUMNS]
    assert frame.filter(pl.col("vendor_added").is_not_null())["contact_history_id"].to_list() == ["0045"]
    assert frame["late_number"].drop_nulls().to_list() == ["7"]
    assert parsed.text_columns == {"late_number": "Int64"}


def test_a_documented_key_first_seen_in_a_later_part_keeps_its_values(tmp_path: Path) -> None:
    rows = [contact(f"{index:04d}", "2026-11-20T12:00:00Z") for index in range(60)]
    for row in rows[:30]:
        del row["sales_value"]
    parsed = parse(export_zip(tmp_path, "contact_history", NOV_20, rows), tmp_path / "out", part_bytes=SMALL_PARTS)

    assert read_all(parsed)["sales_value"].to_list() == [None] * 30 + [12.5] * 30


def test_a_documented_column_missing_from_the_file_is_present_and_null(tmp_path: Path) -> None:
    rows = [contact("1", "2026-11-19T12:00:00Z"), contact("2", "2026-11-21T12:00:00Z")]
    for row in rows:
        del row["sales_value"]
    parsed = parse(
        export_zip(tmp_path, "contact_history", NOV_19_TO_21, rows, "csv"), tmp_path / "out", window=NOV_19_TO_21
    )

    written = [day for day in parsed.days if day.path is not None]
    assert len(written) == 2
    for day in written:
        assert day.path is not None
        schema = pl.read_parquet_schema(day.path)
        assert list(schema)[: len(SCHEMAS["contact_history"].columns)] == list(SCHEMAS["contact_history"].columns)
        assert schema["sales_value"] == pl.Float64
    assert read_all(parsed)["sales_value"].null_count() == 2
    assert "sales_value" not in parsed.vendor_columns
    assert set(parsed.vendor_columns) == set(SCHEMAS["contact_history"].columns) - {"sales_value"}


@pytest.mark.parametrize(
    ("timezone", "expected_day"),
    [("UTC", date(2026, 11, 21)), ("America/Los_Angeles", date(2026, 11, 20)), ("Asia/Tokyo", date(2026, 11, 21))],
)
def test_rows_of_a_multi_day_export_go_to_their_day_in_the_configured_timezone(
    tmp_path: Path, timezone: str, expected_day: date
) -> None:
    # 03:00 UTC on the 21st is 19:00 on the 20th in Los Angeles and noon on the 21st in Tokyo.
    rows = [contact("1", "2026-11-21T03:00:00Z")]
    parsed = parse(
        export_zip(tmp_path, "contact_history", NOV_19_TO_21, rows),
        tmp_path / "out",
        window=NOV_19_TO_21,
        timezone=timezone,
    )

    assert [(day.day, day.rows) for day in parsed.days if day.rows] == [(expected_day, 1)]
    assert read_all(parsed)["_export_date"].to_list() == [expected_day]


@pytest.mark.parametrize("part_bytes", [PART_BYTES, 1], ids=["one part", "a part per row"])
def test_rows_outside_the_window_or_undated_land_on_its_nearest_edge(tmp_path: Path, part_bytes: int) -> None:
    rows = [
        contact("before", "2026-11-01T00:00:00Z"),
        contact("first", "2026-11-19T00:00:00Z"),
        contact("middle", "2026-11-20T12:00:00Z"),
        contact("after", "2026-12-25T00:00:00Z"),
        contact("null", None),
    ]
    rows.append({key: value for key, value in contact("missing", None).items() if key != "updated_at"})
    zip_path = export_zip(tmp_path, "contact_history", NOV_19_TO_21, rows)
    parsed = parse(zip_path, tmp_path / "out", window=NOV_19_TO_21, part_bytes=part_bytes)

    assert [day.day for day in parsed.days] == list(NOV_19_TO_21.dates())
    assert parsed.rows == sum(day.rows for day in parsed.days) == len(rows)
    placed = dict(read_all(parsed).select("contact_history_id", "_export_date").iter_rows())
    assert placed == {
        "before": date(2026, 11, 19),
        "first": date(2026, 11, 19),
        "middle": date(2026, 11, 20),
        "after": date(2026, 11, 21),
        "null": date(2026, 11, 21),
        "missing": date(2026, 11, 21),
    }
    # Counted per day (added up over the parts), so the rows_inside_export_window check can name them.
    assert [(day.clamped_rows, day.undated_rows) for day in parsed.days] == [(1, 0), (0, 0), (1, 2)]


def test_a_one_day_export_keeps_every_row_on_its_day(tmp_path: Path) -> None:
    rows = [contact("early", "2026-11-19T08:00:00Z"), contact("late", "2026-11-22T08:00:00Z"), contact("none", None)]
    parsed = parse(
        export_zip(tmp_path, "contact_history", NOV_20, rows), tmp_path / "out", timezone="Pacific/Kiritimati"
    )

    assert [(day.day, day.rows) for day in parsed.days] == [(date(2026, 11, 20), 3)]
    assert set(read_all(parsed)["_export_date"]) == {date(2026, 11, 20)}
    assert [(day.clamped_rows, day.undated_rows) for day in parsed.days] == [(2, 1)]


def test_the_caller_can_choose_another_documented_timestamp_as_the_date_column(tmp_path: Path) -> None:
    rows = [item("1", "2026-11-19T12:00:00Z")]  # updated_at is 2026-11-21T00:00:00Z
    zip_path = export_zip(tmp_path, "conversation_items", NOV_19_TO_21, rows)

    by_created = parse(zip_path, tmp_path / "a", source="conversation_items", window=NOV_19_TO_21)
    by_updated = parse(
        zip_path, tmp_path / "b", source="conversation_items", window=NOV_19_TO_21, date_column="updated_at"
    )

    assert [day.rows for day in by_created.days] == [1, 0, 0]
    assert [day.rows for day in by_updated.days] == [0, 0, 1]
    with pytest.raises(ValueError, match="'body' is not a documented timestamp of conversation_items"):
        parse(zip_path, tmp_path / "c", source="conversation_items", window=NOV_19_TO_21, date_column="body")


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_an_empty_member_gives_every_day_zero_rows(tmp_path: Path, fmt: OutputFormat) -> None:
    zip_path = write_zip(tmp_path / "raw.zip", member_name("contact_history", NOV_19_TO_21, fmt), "")
    parsed = parse(zip_path, tmp_path / "out", window=NOV_19_TO_21)

    assert parsed.rows == 0
    assert [(day.day, day.path, day.rows) for day in parsed.days] == [(day, None, 0) for day in NOV_19_TO_21.dates()]
    assert list(parsed.columns) == [*SCHEMAS["contact_history"].columns, *LINEAGE_COLUMNS]
    assert list((tmp_path / "out").iterdir()) == []


def test_parsing_again_replaces_each_day_of_the_window(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    first = [contact("a", "2026-11-19T12:00:00Z"), contact("b", "2026-11-21T12:00:00Z")]
    parse(export_zip(tmp_path, "contact_history", NOV_19_TO_21, first), out_dir, window=NOV_19_TO_21)
    second = [contact("c", "2026-11-19T12:00:00Z")]
    parsed = parse(export_zip(tmp_path, "contact_history", NOV_19_TO_21, second, "csv"), out_dir, window=NOV_19_TO_21)

    assert read_all(parsed)["contact_history_id"].to_list() == ["c"]
    assert sorted(path.relative_to(out_dir).as_posix() for path in out_dir.rglob("*")) == [
        "export_date=2026-11-19.parquet"
    ]


def malformed(tmp_path: Path, member: str, text: str, part_bytes: int = PART_BYTES) -> MalformedExport:
    zip_path = write_zip(tmp_path / "raw.zip", member, text)
    out_dir = tmp_path / "out"
    with pytest.raises(MalformedExport) as caught:
        parse(zip_path, out_dir, window=NOV_19_TO_21, part_bytes=part_bytes)
    assert list(out_dir.rglob("*.parquet")) == [], "a failed parse must not leave Parquet behind"
    assert str(zip_path) in str(caught.value)
    return caught.value


JSON_MEMBER = member_name("contact_history", NOV_19_TO_21, "json")
CSV_MEMBER = member_name("contact_history", NOV_19_TO_21, "csv")


def test_a_bad_json_line_is_named(tmp_path: Path) -> None:
    good = ndjson_text([contact("1", "2026-11-20T00:00:00Z")] * 2)
    error = malformed(tmp_path, JSON_MEMBER, good + '{"contact_history_id": "3", \n' + good)
    assert error.line == 3
    assert f"member '{JSON_MEMBER}', line 3" in str(error)
    assert "not valid JSON" in str(error)


def test_a_json_line_that_is_not_an_object_is_named(tmp_path: Path) -> None:
    error = malformed(tmp_path, JSON_MEMBER, ndjson_text([contact("1", None)]) + "\n[1, 2]\n")
    assert error.line == 3
    assert "JSON list, not an object" in str(error)


def test_a_csv_row_with_the_wrong_number_of_fields_is_named(tmp_path: Path) -> None:
    # The first row's body spans three physical lines, so the short row starts on line 5.
    text = 'id,body,created_at\r\n1,"two\nmore\nlines",x\r\n2,short\r\n'
    error = malformed(tmp_path, CSV_MEMBER, text)
    assert error.line == 5
    assert "the row has 2 fields but the header has 3" in str(error)


def test_a_bad_json_line_in_a_later_part_is_named(tmp_path: Path) -> None:
    good = ndjson_text([contact(str(index), "2026-11-20T00:00:00Z") for index in range(40)])
    error = malformed(tmp_path, JSON_MEMBER, good + '{"contact_history_id": "x", \n' + good, SMALL_PARTS)
    assert error.line == 41
    assert "not valid JSON" in str(error)


def test_a_short_csv_row_in_a_later_part_is_named(tmp_path: Path) -> None:
    # Every row spans two lines (the body holds a line break), and each part repeats the header.
    rows = "".join(f'{index},"two\nlines",x\r\n' for index in range(200))
    error = malformed(tmp_path, CSV_MEMBER, f"id,body,created_at\r\n{rows}200,short\r\n", SMALL_PARTS)
    assert error.line == 402
    assert "the row has 2 fields but the header has 3" in str(error)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("updated_at", "2026-11-20 noon", "an ISO-8601 timestamp"),
        ("updated_at", "2026-11-20T12:00:00", "an ISO-8601 timestamp"),  # no Z or offset: ambiguous
        ("opted_out", "yes", "a boolean"),
        ("sales_value", "12,50", "a number"),
    ],
)
@pytest.mark.parametrize("fmt", ["json", "csv"])
@pytest.mark.parametrize("part_bytes", [PART_BYTES, 1], ids=["one part", "a part per record"])
def test_a_value_that_does_not_parse_names_its_line(
    tmp_path: Path, fmt: OutputFormat, field: str, value: str, expected: str, part_bytes: int
) -> None:
    rows = [contact(str(index), "2026-11-20T12:00:00Z", body="multi\nline") for index in range(4)]
    rows[2][field] = value
    text = ndjson_text(rows) if fmt == "json" else csv_text(rows)
    error = malformed(tmp_path, member_name("contact_history", NOV_19_TO_21, fmt), text, part_bytes)
    # NDJSON: one row per line. CSV: a header line, then two lines per row (the body holds a line break).
    assert error.line == (3 if fmt == "json" else 6)
    assert f"{field} holds {value!r}, which is not {expected}" in str(error)


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("first name", "column 'first name' cannot be loaded into BigQuery: column names need a letter or underscore"),
        ("_PARTITIONTIME", "BigQuery reserves column names starting with _PARTITION"),
        ("Email", "columns 'email' and 'Email' differ only in case"),
        ("_loaded_at", "column '_loaded_at' has the name of the pipeline's own column '_loaded_at'"),
        ("Export_Date", "column 'Export_Date' has the name of the pipeline's own column 'export_date'"),
    ],
)
@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_a_column_name_bigquery_cannot_take_is_refused_before_anything_is_written(
    tmp_path: Path, fmt: OutputFormat, extra: str, problem: str
) -> None:
    rows = [contact("1", "2026-11-20T12:00:00Z", **{extra: "x"})]
    text = ndjson_text(rows) if fmt == "json" else csv_text(rows)
    error = malformed(tmp_path, member_name("contact_history", NOV_19_TO_21, fmt), text)
    assert problem in str(error)
    assert "report the column to Hatch" in str(error)


def test_a_zip_without_the_expected_member_is_refused(tmp_path: Path) -> None:
    error = malformed(tmp_path, "contact_history_2026-11-01_2026-11-02.json", ndjson_text([contact("1", None)]))
    assert "expected exactly one member named contact_history_2026-11-19_2026-11-21.json or" in str(error)
    assert "'contact_history_2026-11-01_2026-11-02.json'" in str(error)
    assert "Check that this ZIP is the contact_history export for 2026-11-19..2026-11-21" in str(error)


def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    zip_path = tmp_path / "raw.zip"
    zip_path.write_bytes(b'{"not": "a zip"}')
    with pytest.raises(MalformedExport, match="not a readable ZIP archive"):
        parse(zip_path, tmp_path / "out")


def test_an_unknown_timezone_is_refused_before_any_work(tmp_path: Path) -> None:
    zip_path = export_zip(tmp_path, "contact_history", NOV_20, [contact("1", None)])
    with pytest.raises(ValueError, match="'Mars/Olympus' is not an IANA time zone name"):
        parse(zip_path, tmp_path / "out", timezone="Mars/Olympus")


def test_a_member_that_decompresses_beyond_the_limit_is_stopped_while_streaming(tmp_path: Path) -> None:
    zip_path = write_zip(tmp_path / "raw.zip", JSON_MEMBER, ndjson_text([contact("1", None)]) * 2_000)
    with pytest.raises(MalformedExport, match="decompresses to more than 100,000 bytes") as caught:
        parse_export(
            zip_path,
            source="contact_history",
            window=NOV_19_TO_21,
            out_dir=tmp_path / "out",
            timezone="UTC",
            source_file="gs://bucket/raw.zip",
            loaded_at=LOADED_AT,
            max_member_bytes=100_000,
        )
    assert "If Hatch really sent this, raise max_member_bytes" in str(caught.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_zip_cut_short_is_refused(tmp_path: Path) -> None:
    zip_path = export_zip(tmp_path, "contact_history", NOV_20, [contact(str(index), None) for index in range(500)])
    zip_path.write_bytes(zip_path.read_bytes()[: zip_path.stat().st_size // 2])
    with pytest.raises(MalformedExport, match="not a readable ZIP archive"):
        parse(zip_path, tmp_path / "out")


# Timestamps near the documented form: the fast path for `Z` must read exactly what the full rule reads.
TIMESTAMP_TEXT = st.builds(
    "{}-{}-{}{}{}:{}:{}{}{}".format,
    st.sampled_from(["2026", "2024", "+2026", "12026"]),
    st.sampled_from(["11", "02", "1"]),
    st.sampled_from(["20", "29", "30", "5"]),
    st.sampled_from(["T", " ", "t"]),
    st.sampled_from(["12", "00", "23", "24", "1"]),
    st.sampled_from(["00", "59"]),
    st.sampled_from(["00", "59", "60"]),
    st.sampled_from(["", ".", ".5", ".123", ".123456", ".1234567", ".999999999", ".1234567890", ".5x"]),
    st.sampled_from(["Z", "ZZ", "z", "+02:00", "-0130", "", " Z"]),
)


@settings(max_examples=120, deadline=None)
@given(value=TIMESTAMP_TEXT)
def test_timestamps_are_read_by_the_documented_rule_whatever_their_form(value: str) -> None:
    # One value a file: a file holding any timestamp in another form than UTC with Z is parsed by the full rule.
    values = [value, value]
    expected = pl.Series(values).str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="us", time_zone="UTC", strict=False
    )
    rows = [contact(str(index), value) for index, value in enumerate(values)]
    with tempfile.TemporaryDirectory() as scratch:
        zip_path = export_zip(Path(scratch), "contact_history", NOV_20, rows)
        if expected.null_count():
            with pytest.raises(MalformedExport, match="updated_at holds"):
                parse(zip_path, Path(scratch) / "out")
        else:
            frame = read_all(parse(zip_path, Path(scratch) / "out"))
            assert frame["updated_at"].to_list() == expected.to_list()

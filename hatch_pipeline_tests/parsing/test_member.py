"""The export's member decompressed into parts: each part ends at a record boundary and is a file of its own, the
parts together are the file as the vendor sent it, reading them again gives the same parts, and the counts taken
on the way are the file's."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import zipfile
from datetime import date
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hatch_pipeline.contract import ExportWindow, OutputFormat
from hatch_pipeline.parsing.member import Member, MemberFile, extract_member

WINDOW = ExportWindow(date(2026, 11, 20), date(2026, 11, 20))
STEM = "conversation_items_2026-11-20_2026-11-20"
BOM = b"\xef\xbb\xbf"

# Fields that stress RFC 4180: quotes, commas, both line endings, and text that looks like a record end.
FIELD = st.text(alphabet=st.sampled_from(['"', ",", "\n", "\r", "a", "é", " ", "\u2028"]), max_size=12)


def extract(directory: Path, data: bytes, fmt: OutputFormat, part_bytes: int) -> tuple[Member, list[bytes]]:
    """The member, and the parts it handed on; every test also checks that reading them again gives the same."""
    zip_path = directory / "export.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{STEM}.{fmt}", data)
    handed_on: list[bytes] = []

    def on_part(file: MemberFile, part: bytes) -> None:
        assert (file.zip_path, file.name, file.format) == (zip_path, f"{STEM}.{fmt}", fmt)
        handed_on.append(part)

    member = extract_member(zip_path, "conversation_items", WINDOW, part_bytes=part_bytes, on_part=on_part)
    assert list(member.parts()) == handed_on
    return member, handed_on


def csv_bytes(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows([["id", "body", "note"], *rows])
    return buffer.getvalue().encode()


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.lists(FIELD, min_size=3, max_size=3), max_size=25), part_bytes=st.integers(1, 120))
def test_csv_parts_each_hold_the_header_and_whole_records(rows: list[list[str]], part_bytes: int) -> None:
    data = csv_bytes(rows)
    with tempfile.TemporaryDirectory() as scratch:
        member, parts = extract(Path(scratch), BOM + data, "csv", part_bytes)

        records: list[list[str]] = []
        for part in parts:
            with io.StringIO(part.decode(), newline="") as text:
                header, *part_records = list(csv.reader(text, strict=True))
            assert header == ["id", "body", "note"]
            records += part_records
        assert records == rows
        assert b"".join(member.binary_lines()) == data
        assert (member.size, member.commas) == (len(data), data.count(b","))
        assert member.ends_with_line_break


@settings(max_examples=30, deadline=None)
@given(lines=st.lists(st.dictionaries(st.sampled_from(["id", "body"]), FIELD), max_size=20), part=st.integers(1, 80))
def test_ndjson_parts_hold_whole_lines(lines: list[dict[str, str]], part: int) -> None:
    data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
    with tempfile.TemporaryDirectory() as scratch:
        member, parts = extract(Path(scratch), data, "json", part)

        for text in parts:
            assert all(json.loads(line) is not None for line in text.splitlines())
        assert b"".join(parts) == data
        assert b"".join(member.binary_lines()) == data
        assert member.line_breaks == data.count(b"\n")


def test_a_part_ends_at_the_first_record_boundary_past_the_part_size(tmp_path: Path) -> None:
    data = b'id,body\n1,"a\nb"\n2,c\n3,d\n'
    _, parts = extract(tmp_path, data, "csv", part_bytes=10)

    # The header and the first record reach 10 bytes inside the quoted line break, so the part ends after it.
    assert parts == [b'id,body\n1,"a\nb"\n', b"id,body\n2,c\n3,d\n"]


def test_a_header_holding_a_quoted_line_break_is_repeated_whole(tmp_path: Path) -> None:
    header = b'"id\nof the row",body\n'
    _, parts = extract(tmp_path, header + b"1,2\n3,4\n", "csv", part_bytes=1)

    assert parts == [header, header + b"1,2\n", header + b"3,4\n"]


def test_an_empty_member_is_one_empty_part(tmp_path: Path) -> None:
    member, parts = extract(tmp_path, b"", "json", part_bytes=1)

    assert parts == [b""]
    assert (member.size, member.line_breaks, member.ends_with_line_break) == (0, 0, False)

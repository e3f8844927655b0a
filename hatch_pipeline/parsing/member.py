"""The export ZIP's one file, decompressed in chunks and cut into parts that end at record boundaries.

Parts bound the memory of parsing: each part is read, typed and written on its own, so memory grows with the part
size, not with the file. They are handed on in memory as soon as they are complete, so parsing runs beside
decompression, and nothing of the file is written to disk: the rare paths that need the whole file again (naming
the line at fault, reading every part with keys found late) decompress the ZIP once more.
A record boundary is a line break outside quotes: any line break in NDJSON (JSON strings cannot hold one), and in
RFC 4180 CSV a line break after an even number of double quotes (a quote inside a quoted field is written twice).
Every CSV part starts with the header record, so each part is a CSV file of its own.

The counts taken on the way (line breaks, and for CSV commas) are of the file as the vendor sent it, so the parser
can check the number of records polars read without reading the file again.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hatch_pipeline.contract import DataSource, ExportWindow, OutputFormat
from hatch_pipeline.parsing.zip_stream import UnreadableMember, member_chunks

__all__ = ["MAX_MEMBER_BYTES", "PART_BYTES", "MalformedExport", "Member", "MemberFile", "extract_member"]

MAX_MEMBER_BYTES: Final = 1_000_000_000
"""Largest member we decompress: ten times the vendor's 100 MB payload limit, so a zip bomb stops here."""
PART_BYTES: Final = 4_000_000
"""About how much of the member one part holds; a part ends at the first record boundary past this size."""

_CHUNK_BYTES: Final = 1 << 20
_BOM: Final = b"\xef\xbb\xbf"
_VENDOR_FIX: Final = (
    "The stored ZIP is kept as the vendor sent it: report the file and line to Hatch, "
    "and re-export the window once they have fixed the data."
)


class MalformedExport(ValueError):
    """A stored export breaks the vendor's format; the message names the ZIP, its member, the line and the fix."""

    def __init__(
        self, zip_path: Path, member: str | None, problem: str, line: int | None = None, fix: str = _VENDOR_FIX
    ) -> None:
        where = str(zip_path)
        if member is not None:
            where += f", member {member!r}"
        if line is not None:
            where += f", line {line}"
        super().__init__(f"Malformed export ({where}): {problem}. {fix}")
        self.zip_path = zip_path
        self.member = member
        self.line = line


@dataclass(frozen=True)
class MemberFile:
    """The export's one file as errors name it: the stored ZIP, the member's name, and its format."""

    zip_path: Path
    name: str
    format: OutputFormat

    def malformed(self, problem: str, line: int | None = None, fix: str = _VENDOR_FIX) -> MalformedExport:
        return MalformedExport(self.zip_path, self.name, problem, line, fix)


@dataclass(frozen=True)
class Member(MemberFile):
    """What decompressing the whole file counted; `parts()` and `binary_lines()` read it again from the ZIP."""

    size: int
    line_breaks: int
    """b"\\n" bytes in an NDJSON file (not counted for CSV): with a final line break, the number of lines."""
    commas: int
    """b"," bytes in a CSV file (not counted for NDJSON): separators plus commas inside quoted fields."""
    ends_with_line_break: bool
    part_bytes: int
    max_bytes: int
    info: zipfile.ZipInfo
    """The member's entry in the archive's directory, so reading it again need not read the directory again."""

    def parts(self) -> Iterator[bytes]:
        """The parts again, cut as `extract_member` cut them."""
        yield from _Splitter(self.format, self.part_bytes).parts(_chunks(self, self.info, self.max_bytes))

    def binary_lines(self) -> Iterator[bytes]:
        """The file's lines as the vendor sent them (without the byte-order mark)."""
        pending: list[bytes] = []  # the start of a line that goes on in the next chunk
        for chunk in _chunks(self, self.info, self.max_bytes):
            start = 0
            while (end := chunk.find(b"\n", start) + 1) > 0:
                yield b"".join([*pending, chunk[start:end]])
                pending, start = [], end
            if start < len(chunk):
                pending.append(chunk[start:])
        if pending:
            yield b"".join(pending)


def extract_member(
    zip_path: Path,
    source: DataSource,
    window: ExportWindow,
    *,
    max_bytes: int = MAX_MEMBER_BYTES,
    part_bytes: int = PART_BYTES,
    on_part: Callable[[MemberFile, bytes], None] = lambda *_: None,
) -> Member:
    """Decompress the ZIP's one member into parts, after checking it is the file the contract names.

    Each part is passed to `on_part` once complete, in order; the last only once the whole member has been read
    (an empty member is one empty part). Nothing is written to disk, so no name from the archive is ever a path.
    """
    stem = f"{source}_{window.start.isoformat()}_{window.end.isoformat()}"
    expected: dict[str, OutputFormat] = {f"{stem}.json": "json", f"{stem}.csv": "csv"}
    try:
        with zipfile.ZipFile(zip_path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, EOFError) as error:
        raise _unreadable(zip_path, error) from None
    if len(infos) != 1 or infos[0].filename not in expected:
        found = ", ".join(repr(info.filename) for info in infos) or "no member"
        raise MalformedExport(
            zip_path,
            None,
            f"expected exactly one member named {stem}.json or {stem}.csv, found {found}",
            fix=f"Check that this ZIP is the {source} export for {window}; if it is, report it to Hatch.",
        )
    [info] = infos
    file = MemberFile(zip_path, info.filename, expected[info.filename])
    if info.file_size > max_bytes:
        raise _too_large(file, max_bytes)
    splitter = _Splitter(file.format, part_bytes)
    for part in splitter.parts(_chunks(file, info, max_bytes)):
        on_part(file, part)
    return Member(
        zip_path=zip_path,
        name=file.name,
        format=file.format,
        size=splitter.size,
        line_breaks=splitter.line_breaks,
        commas=splitter.commas,
        ends_with_line_break=splitter.last_byte == b"\n",
        part_bytes=part_bytes,
        max_bytes=max_bytes,
        info=info,
    )


def _chunks(file: MemberFile, info: zipfile.ZipInfo, max_bytes: int) -> Iterator[bytes]:
    """The member decompressed, a chunk at a time, without the byte-order mark; a zip bomb stops at `max_bytes`."""
    size, first = 0, True
    try:
        for chunk in member_chunks(file.zip_path, info, _CHUNK_BYTES):
            if first:
                chunk, first = chunk.removeprefix(_BOM), False
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(file, max_bytes)
            yield chunk
    except UnreadableMember as error:
        raise _unreadable(file.zip_path, error) from None


def _unreadable(zip_path: Path, error: Exception) -> MalformedExport:
    return MalformedExport(zip_path, None, f"not a readable ZIP archive ({error})")


def _too_large(file: MemberFile, max_bytes: int) -> MalformedExport:
    return file.malformed(
        f"the member decompresses to more than {max_bytes:,} bytes (a zip bomb, or far above "
        "the vendor's 100 MB payload limit)",
        fix="The stored ZIP is kept. If Hatch really sent this, raise max_member_bytes.",
    )


class _Splitter:
    """Cuts the decompressed chunks into parts, each at the first record boundary past `part_bytes`."""

    def __init__(self, output_format: OutputFormat, part_bytes: int) -> None:
        self.format: OutputFormat = output_format
        self.size = self.line_breaks = self.commas = 0
        self.last_byte = b""
        self._part_bytes = part_bytes
        self._header = b""
        """The record every CSV part starts with (found in the first chunk; without it the file stays one part)."""
        self._can_cut = output_format == "json"
        self._odd_quotes = False
        """CSV: whether the text so far leaves a quoted field open."""
        self._pieces: list[memoryview] = []
        self._in_part = 0
        self._made = 0

    def parts(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The parts of the file the chunks make up, each as soon as it is complete."""
        for chunk in chunks:
            yield from self._cut(chunk)
        if self._pieces or not self._made:  # an empty file is one empty part
            yield self._part()

    def _cut(self, chunk: bytes) -> Iterator[bytes]:
        first = not self.size
        self.size += len(chunk)
        if self.format == "json":
            self.line_breaks += chunk.count(b"\n")
        self.last_byte = chunk[-1:] or self.last_byte
        boundaries = _Boundaries(chunk, self._odd_quotes, quoted=self.format == "csv")
        if self.format == "csv":
            self.commas += chunk.count(b",")
            if first and (end := _Boundaries(chunk, False, quoted=True).first_from(0)) is not None:
                self._header, self._can_cut = chunk[:end], True
        view = memoryview(chunk)  # slices of a view are not copies
        start = 0
        while self._can_cut and (cut := boundaries.first_from(start + self._part_bytes - self._in_part)) is not None:
            self._pieces.append(view[start:cut])
            yield self._part()
            start = cut
        if start < len(chunk):
            self._pieces.append(view[start:])
            self._in_part += len(chunk) - start
        self._odd_quotes = boundaries.odd_at_end()

    def _part(self) -> bytes:
        """The part the pieces so far make up (after the first, a CSV part starts with the header); a new one starts."""
        part = b"".join([self._header if self._made else b"", *self._pieces])
        self._pieces, self._in_part = [], 0
        self._made += 1
        return part


class _Boundaries:
    """The record boundaries of a chunk, found left to right; quotes are counted once, as far as a search reaches."""

    def __init__(self, chunk: bytes, odd_at_start: bool, *, quoted: bool) -> None:
        self._chunk = chunk
        self._quoted = quoted
        self._counted = 0
        self._odd = odd_at_start

    def first_from(self, start: int) -> int | None:
        """Index just past the first record-ending line break at or after `start`, or None."""
        end = self._chunk.find(b"\n", max(start, self._counted, 0))
        while end >= 0:
            if not self._odd_before(end):
                return end + 1
            end = self._chunk.find(b"\n", end + 1)
        return None

    def odd_at_end(self) -> bool:
        return self._odd_before(len(self._chunk))

    def _odd_before(self, index: int) -> bool:
        if self._quoted:
            self._odd ^= bool(self._chunk.count(b'"', self._counted, index) % 2)
            self._counted = index
        return self._odd

"""The export ZIP's one file, decompressed in chunks into parts that end at record boundaries.

Parts bound the memory of parsing: each part is read, typed and written on its own, so memory grows with the part
size, not with the file. They are handed on as soon as they are complete, so parsing runs beside decompression.
A record boundary is a line break outside quotes: any line break in NDJSON (JSON strings cannot hold one), and in
RFC 4180 CSV a line break after an even number of double quotes (a quote inside a quoted field is written twice).
Every CSV part starts with the header record, so each part is a CSV file of its own.

The counts taken on the way (line breaks, and for CSV commas) are of the file as the vendor sent it, so the parser
can check the number of records polars read without reading the file again.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path
from typing import BinaryIO, Final

from hatch_pipeline.contract import DataSource, ExportWindow, OutputFormat

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
    """The whole file as parts, in order, and what decompressing it counted."""

    parts: tuple[Path, ...]
    size: int
    line_breaks: int
    """b"\\n" bytes in an NDJSON file (not counted for CSV): with a final line break, the number of lines."""
    commas: int
    """b"," bytes in a CSV file (not counted for NDJSON): separators plus commas inside quoted fields."""
    ends_with_line_break: bool
    header_bytes: int
    """Length of the header record that every CSV part after the first repeats (0 for NDJSON)."""

    def binary_lines(self) -> Iterator[bytes]:
        """The file's lines as the vendor sent them (without the byte-order mark), read back from the parts."""
        files = [part.open("rb") for part in self.parts]
        try:
            for file in files[1:]:
                file.seek(self.header_bytes)
            yield from chain.from_iterable(files)
        finally:
            for file in files:
                file.close()


def extract_member(
    zip_path: Path,
    source: DataSource,
    window: ExportWindow,
    scratch: Path,
    *,
    max_bytes: int = MAX_MEMBER_BYTES,
    part_bytes: int = PART_BYTES,
    on_part: Callable[[MemberFile, Path], None] = lambda *_: None,
) -> Member:
    """Decompress the ZIP's one member into parts, after checking it is the file the contract names.

    Parts are written to fixed names in `scratch`, never to a path taken from the archive, and each is passed to
    `on_part` once complete, in order. A UTF-8 byte-order mark at the start is dropped (neither reader wants it).
    """
    stem = f"{source}_{window.start.isoformat()}_{window.end.isoformat()}"
    expected: dict[str, OutputFormat] = {f"{stem}.json": "json", f"{stem}.csv": "csv"}
    try:
        with zipfile.ZipFile(zip_path) as archive:
            infos = archive.infolist()
            if len(infos) != 1 or infos[0].filename not in expected:
                found = ", ".join(repr(info.filename) for info in infos) or "no member"
                raise MalformedExport(
                    zip_path,
                    None,
                    f"expected exactly one member named {stem}.json or {stem}.csv, found {found}",
                    fix=f"Check that this ZIP is the {source} export for {window}; if it is, report it to Hatch.",
                )
            info = infos[0]

            def too_large() -> MalformedExport:
                return MalformedExport(
                    zip_path,
                    info.filename,
                    f"the member decompresses to more than {max_bytes:,} bytes (a zip bomb, or far above "
                    "the vendor's 100 MB payload limit)",
                    fix="The stored ZIP is kept. If Hatch really sent this, raise max_member_bytes.",
                )

            if info.file_size > max_bytes:
                raise too_large()
            file = MemberFile(zip_path, info.filename, expected[info.filename])
            splitter = _Splitter(scratch, file.format, part_bytes, partial(on_part, file))
            with archive.open(info) as packed, splitter:
                while chunk := packed.read(_CHUNK_BYTES):
                    if splitter.size + len(chunk) > max_bytes:
                        raise too_large()
                    splitter.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise MalformedExport(zip_path, None, f"not a readable ZIP archive ({error})") from None
    return Member(
        zip_path=zip_path,
        name=file.name,
        format=file.format,
        parts=tuple(splitter.parts),
        size=splitter.size,
        line_breaks=splitter.line_breaks,
        commas=splitter.commas,
        ends_with_line_break=splitter.last_byte == b"\n",
        header_bytes=len(splitter.header),
    )


class _Splitter:
    """Writes the decompressed chunks into parts, each cut at the first record boundary past `part_bytes`."""

    def __init__(
        self, scratch: Path, output_format: OutputFormat, part_bytes: int, on_part: Callable[[Path], None]
    ) -> None:
        self.format: OutputFormat = output_format
        self.parts: list[Path] = []
        self.size = self.line_breaks = self.commas = 0
        self.last_byte = b""
        self.header = b""
        """The record every CSV part starts with (found in the first chunk; without it the file stays one part)."""
        self._scratch = scratch
        self._part_bytes = part_bytes
        self._on_part = on_part
        self._can_cut = output_format == "json"
        self._odd_quotes = False
        """CSV: whether the text so far leaves a quoted field open."""
        self._file: BinaryIO | None = self._open_part()
        """The part being written; None between a part that ended with a chunk and the next chunk."""
        self._in_part = 0

    def __enter__(self) -> _Splitter:
        return self

    def __exit__(self, error: type[BaseException] | None, *_: object) -> None:
        """Close the last part; hand it on only when the whole member was written."""
        if self._file is None:
            return
        self._file.close()
        if error is None:
            self._on_part(self.parts[-1])

    def write(self, chunk: bytes) -> None:
        """Append a chunk, handing on each part it completes."""
        first = not self.size
        if first:
            chunk = chunk.removeprefix(_BOM)
        self.size += len(chunk)
        if self.format == "json":
            self.line_breaks += chunk.count(b"\n")
        self.last_byte = chunk[-1:] or self.last_byte
        boundaries = _Boundaries(chunk, self._odd_quotes, quoted=self.format == "csv")
        if self.format == "csv":
            self.commas += chunk.count(b",")
            if first and (end := _Boundaries(chunk, False, quoted=True).first_from(0)) is not None:
                self.header, self._can_cut = chunk[:end], True
        view = memoryview(chunk)  # slices of a view are not copies
        start = 0
        while self._can_cut and (cut := boundaries.first_from(start + self._part_bytes - self._in_part)) is not None:
            file = self._file or self._open_part()
            file.write(view[start:cut])
            file.close()
            self._file = None
            self._on_part(self.parts[-1])
            start, self._in_part = cut, 0
        if start < len(chunk):
            self._file = self._file or self._open_part()
            self._file.write(view[start:])
            self._in_part += len(chunk) - start
        self._odd_quotes = boundaries.odd_at_end()

    def _open_part(self) -> BinaryIO:
        path = self._scratch / f"member-{len(self.parts):05d}.{self.format}"
        self.parts.append(path)
        file = path.open("wb")
        file.write(self.header)
        return file


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

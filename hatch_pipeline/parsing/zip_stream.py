"""One member of a ZIP archive, decompressed a chunk at a time with ISA-L instead of zlib.

Why not `zipfile.ZipFile.open`: it inflates with zlib, and inflating was the largest part of the parse that bare
polars has no way around either; ISA-L's inflate (the `isal` package) does the same work about 2.8 times faster on
our exports. `zipfile` still reads the archive's directory; this module reads only the member's bytes and checks
what `zipfile` would: the local header names the same file, the data is not encrypted, its length and CRC-32 are
the ones the directory records, and no chunk is larger than asked for, so a zip bomb never fills memory.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Final

from isal import isal_zlib

__all__ = ["UnreadableMember", "member_chunks"]

_LOCAL_HEADER: Final = struct.Struct("<4s22xHH")
"""Signature, then (past version, flags, method, time, date, CRC and sizes) the name and extra field lengths."""
_LOCAL_SIGNATURE: Final = b"PK\x03\x04"
_ENCRYPTED: Final = 0x1
_UTF8_NAME: Final = 0x800
_RAW_DEFLATE: Final = -15
"""wbits for a deflate stream without zlib's header and trailer, as ZIP stores it."""
_INFLATE_ERROR: Final[type[Exception]] = isal_zlib.error  # type: ignore[assignment]  # its stub types it as an instance


class UnreadableMember(ValueError):
    """The member's bytes are not what the archive's directory says they are (truncated, corrupt, encrypted)."""


def member_chunks(zip_path: Path, info: zipfile.ZipInfo, chunk_bytes: int) -> Iterator[bytes]:
    """The member's uncompressed bytes, in chunks of at most `chunk_bytes`; raises UnreadableMember at a defect
    (a defect found only at the end, such as a wrong CRC-32, after the chunks before it)."""
    if info.flag_bits & _ENCRYPTED:
        raise UnreadableMember(f"{info.filename!r} is encrypted")
    inflate = _inflater(info)
    crc = size = 0
    with zip_path.open("rb") as archive:
        _skip_local_header(archive, info)
        compressed = _exactly(archive, info.compress_size, chunk_bytes)
        for chunk in inflate(compressed, chunk_bytes):
            crc = isal_zlib.crc32(chunk, crc)
            size += len(chunk)
            yield chunk
    if size != info.file_size:
        raise UnreadableMember(f"{info.filename!r} holds {size} bytes, its directory entry says {info.file_size}")
    if crc != info.CRC:
        raise UnreadableMember(f"bad CRC-32 for {info.filename!r}")


def _inflater(info: zipfile.ZipInfo) -> Callable[[Iterator[bytes], int], Iterator[bytes]]:
    if info.compress_type == zipfile.ZIP_DEFLATED:
        return _inflated
    if info.compress_type == zipfile.ZIP_STORED:
        return lambda compressed, _: compressed
    raise UnreadableMember(f"{info.filename!r} uses compression method {info.compress_type}; only deflate is expected")


def _skip_local_header(archive: BinaryIO, info: zipfile.ZipInfo) -> None:
    """Move past the member's local header, after checking it is the member the directory names."""
    archive.seek(info.header_offset)
    header = archive.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
        raise UnreadableMember(f"no local header where the directory places {info.filename!r}")
    _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    name = archive.read(name_length)
    expected = info.orig_filename.encode("utf-8" if info.flag_bits & _UTF8_NAME else "cp437")
    if name != expected:
        raise UnreadableMember(f"the directory names {info.orig_filename!r} but the local header {name!r}")
    archive.seek(extra_length, 1)


def _exactly(archive: BinaryIO, length: int, chunk_bytes: int) -> Iterator[bytes]:
    """`length` bytes from the file, in chunks; a file that ends first is truncated."""
    while length:
        data = archive.read(min(length, chunk_bytes))
        if not data:
            raise UnreadableMember("the archive ends inside the member's compressed data (truncated)")
        length -= len(data)
        yield data


def _inflated(compressed: Iterator[bytes], chunk_bytes: int) -> Iterator[bytes]:
    """A raw deflate stream inflated, no output chunk larger than `chunk_bytes` whatever the compression ratio."""
    inflater = isal_zlib.decompressobj(_RAW_DEFLATE)
    try:
        for data in compressed:
            while data:
                chunk = inflater.decompress(data, chunk_bytes)
                data = inflater.unconsumed_tail
                if chunk:
                    yield chunk
        if chunk := inflater.flush():
            yield chunk
    except _INFLATE_ERROR as error:
        raise UnreadableMember(f"the member's compressed data is corrupt ({error})") from None
    if not inflater.eof:
        raise UnreadableMember("the member's compressed data ends before its deflate stream does (truncated)")

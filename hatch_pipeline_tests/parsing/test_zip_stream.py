"""A ZIP member read with ISA-L gives the bytes zipfile gives, in bounded chunks, and refuses what zipfile refuses:
a corrupt or truncated stream, a wrong CRC-32, an encrypted member, a local header naming another file."""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatch_pipeline.parsing.zip_stream import UnreadableMember, member_chunks

NAME = "conversation_items_2026-11-20_2026-11-20.json"
CENTRAL = b"PK\x01\x02"


def archive(tmp_path: Path, data: bytes, method: int = zipfile.ZIP_DEFLATED, *, zip64: bool = False) -> Path:
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w", method) as written, written.open(NAME, "w", force_zip64=zip64) as member:
        member.write(data)
    return path


def read(path: Path, chunk_bytes: int = 1 << 16) -> bytes:
    with zipfile.ZipFile(path) as directory:
        info = directory.getinfo(NAME)
    return b"".join(member_chunks(path, info, chunk_bytes))


def patch_central(path: Path, offset: int, fmt: str, value: int) -> None:
    """Overwrite a field of the member's central directory entry (`offset` bytes into it)."""
    data = bytearray(path.read_bytes())
    start = data.rindex(CENTRAL)
    struct.pack_into(fmt, data, start + offset, value)
    path.write_bytes(bytes(data))


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(max_size=5000) | st.text(max_size=3000).map(str.encode),
    method=st.sampled_from([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED]),
    zip64=st.booleans(),
    chunk_bytes=st.integers(1, 700),
)
def test_the_bytes_are_the_ones_zipfile_reads(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, method: int, zip64: bool, chunk_bytes: int
) -> None:
    path = archive(tmp_path_factory.mktemp("zip"), data, method, zip64=zip64)
    with zipfile.ZipFile(path) as directory:
        expected = directory.read(NAME)

    assert read(path, chunk_bytes) == expected == data


def test_a_zip_bomb_comes_out_in_chunks_no_larger_than_asked(tmp_path: Path) -> None:
    path = archive(tmp_path, bytes(50_000_000))  # compresses about a thousandfold
    assert path.stat().st_size < 100_000
    with zipfile.ZipFile(path) as directory:
        info = directory.getinfo(NAME)

    sizes = [len(chunk) for chunk in member_chunks(path, info, 1 << 20)]
    assert max(sizes) <= 1 << 20
    assert sum(sizes) == 50_000_000


def test_a_corrupt_stream_is_refused(tmp_path: Path) -> None:
    path = archive(tmp_path, os.urandom(20_000) + bytes(20_000))
    data = bytearray(path.read_bytes())
    for index in range(200, 340):  # inside the compressed data, well past the local header
        data[index] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(UnreadableMember, match=r"corrupt|CRC-32|truncated|holds"):
        read(path)


def test_a_wrong_crc_is_refused_after_the_data(tmp_path: Path) -> None:
    path = archive(tmp_path, b'{"id": "1"}\n', zipfile.ZIP_STORED)
    patch_central(path, 16, "<I", 12345)

    with pytest.raises(UnreadableMember, match="bad CRC-32"):
        read(path)


def test_compressed_data_cut_short_is_refused_as_truncated(tmp_path: Path) -> None:
    path = archive(tmp_path, os.urandom(50_000))
    with zipfile.ZipFile(path) as directory:
        compressed = directory.getinfo(NAME).compress_size
    patch_central(path, 20, "<I", compressed // 2)

    with pytest.raises(UnreadableMember, match="truncated"):
        read(path)


def test_an_encrypted_member_is_refused(tmp_path: Path) -> None:
    path = archive(tmp_path, b"{}\n")
    patch_central(path, 8, "<H", 0x1)

    with pytest.raises(UnreadableMember, match="encrypted"):
        read(path)


def test_a_local_header_naming_another_file_is_refused(tmp_path: Path) -> None:
    path = archive(tmp_path, b"{}\n")
    data = bytearray(path.read_bytes())
    data[30:32] = b"x/"  # the local header's copy of the name starts 30 bytes in
    path.write_bytes(bytes(data))

    with pytest.raises(UnreadableMember, match="local header"):
        read(path)

"""Image loading refuses bombs, escapes and garbage with a message naming the file."""

from __future__ import annotations

import struct
import zlib

import pytest
from PIL import Image

from rlhfv.data.images import ImageError, load_image


def png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims width×height pixels: what a decompression bomb looks like at first."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    png_header_only(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(ImageError, match=r"bomb.png: image .*over the limit"):
        load_image(tmp_path / "bomb.png")


def test_path_escaping_the_root_is_refused(tmp_path):
    (tmp_path / "root").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "outside.png")
    with pytest.raises(ImageError, match="escapes"):
        load_image("../outside.png", root=tmp_path / "root")


def test_corrupt_and_missing_files_are_named(tmp_path):
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(ImageError, match=r"x.png: not a readable image"):
        load_image(tmp_path / "x.png")
    with pytest.raises(ImageError, match=r"nope.png: image file not found"):
        load_image(tmp_path / "nope.png")


def test_good_image_comes_back_rgb(tmp_path):
    Image.new("L", (5, 3)).save(tmp_path / "g.png")
    image = load_image("g.png", root=tmp_path)
    assert image.mode == "RGB" and image.size == (5, 3)

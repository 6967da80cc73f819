"""Loading user images safely: clear errors for missing, corrupt, oversized or escaping files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from PIL import Image

MAX_PIXELS = 40_000_000  # a 30000×30000 decompression bomb is 900 M pixels


class ImageError(ValueError):
    """An image that cannot be used, with the file and the reason."""


def inside(path: str | Path, root: str | Path) -> Path:
    """`root / path` resolved, refused unless it stays inside `root` (no `../` or outside absolute
    path, checked on the path's text before any file is touched, and again after symlinks)."""
    base = Path(root).resolve()
    joined = Path(os.path.normpath(base / path))  # an absolute `path` replaces `base` here
    if not joined.is_relative_to(base) or not joined.resolve().is_relative_to(base):
        raise ImageError(f"{path}: image path escapes its folder {base}")
    return joined.resolve()


def load_image(path: str | Path, root: str | Path | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image as RGB.

    Args:
        path: The image file; relative paths are taken against `root`.
        root: If given, the resolved path must stay inside it (no `../` escapes).
        max_pixels: Refuse images with more pixels than this before decoding them.
    """
    p = Path(path) if root is None else inside(path, root)
    if not p.is_file():
        raise ImageError(f"{p}: image file not found")
    return open_image(p, max_pixels, f"{p}: ")


def open_image(source: str | Path | BinaryIO, max_pixels: int = MAX_PIXELS, where: str = "") -> Image.Image:
    """Decode a file or a byte stream as RGB, refusing more than `max_pixels` before decoding;
    errors start with `where` (the file's name, or "" for bytes)."""
    try:
        with Image.open(source) as im:  # reads the header only
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"{where}image is {w}x{h} pixels, over the limit of {max_pixels}")
            im.load()
            return im.convert("RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError as e:  # PIL's own guard fires before ours for huge headers
        raise ImageError(f"{where}image is over the limit of {max_pixels} pixels ({e})") from e
    except Exception as e:  # PIL raises many types for broken files
        raise ImageError(f"{where}not a readable image ({type(e).__name__}: {e})") from e

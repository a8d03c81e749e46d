"""One image to a stored square (ref §3): bytes from a file or an archive member, RGB, resized.

``load_image(loc, size)`` runs in the ``prepare`` workers. ``loc`` is a file path, or
``(archive, offset, length)`` for a member of an uncompressed tar (read with ``os.pread``, so
nothing is extracted and every worker reads in parallel).

What happens to the awkward files of ILSVRC-2012 (each is counted in the ``prepare`` report):

- CMYK and greyscale JPEGs: converted to RGB (``cmyk``, ``greyscale``; other modes ``mode_X``).
- The PNG file named ``.JPEG``: decoded by its content, not its name (``format_png``).
- Empty, truncated or damaged files: reported as bad, then skipped or stopping the run.
- EXIF orientation: **ignored**, the pixels are stored as encoded (``exif_orientation_ignored``).
  The 2012 pipeline did not rotate, and neither do torchvision's ImageFolder (PIL) loaders that
  pretrained weights are evaluated with, so the stored images match what both saw.

Speed: ``Image.draft`` makes libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling) when the
image is at least that many times the stored size; the shorter side is checked to be still
>= ``size`` before the final resize, so no detail is lost to draft mode.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112
_fds: dict[str, int] = {}  # open archives, per process (workers reuse them)


def read_bytes(loc) -> bytes:
    """The bytes of a file path, or of an archive member ``(path, offset, length)``."""
    if isinstance(loc, str):
        with open(loc, "rb") as f:
            return f.read()
    path, offset, length = loc
    fd = _fds.get(path)
    if fd is None:
        fd = _fds[path] = os.open(path, os.O_RDONLY)
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise OSError(f"{path} ends inside a member ({len(data)} of {length} bytes at {offset})")
    return data


def oddities(img: Image.Image) -> tuple[str, ...]:
    """What is unusual about a decoded file, as report tags (see the module docstring)."""
    tags = []
    if img.format != "JPEG":
        tags.append(f"format_{str(img.format).lower()}")
    if img.mode != "RGB":
        tags.append({"CMYK": "cmyk", "L": "greyscale"}.get(img.mode, f"mode_{img.mode}"))
    if "exif" in img.info and img.getexif().get(EXIF_ORIENTATION, 1) not in (0, 1):
        tags.append("exif_orientation_ignored")  # stored as encoded, like 2012 (module doc)
    return tuple(tags)


def decode(data: bytes, size: int, draft: bool = True) -> tuple[Image.Image, tuple[str, ...]]:
    """RGB image whose shorter side is >= ``size``, and its oddity tags; raises if damaged."""
    img = Image.open(io.BytesIO(data))
    tags = oddities(img)
    if draft and img.format == "JPEG":
        full = img.size
        img.draft("RGB", (size, size))  # DCT scaling by 1/2, 1/4, 1/8 where it stays >= size
        if min(img.size) < min(size, *full):  # never let draft mode lose resolution
            img = Image.open(io.BytesIO(data))
    return img.convert("RGB"), tags  # CMYK, greyscale, palette -> RGB; decodes fully here


def square(img: Image.Image, size: int) -> np.ndarray:
    """Shorter side to ``size``, centre ``size`` x ``size`` crop (ref §3): (size, size, 3) uint8."""
    w, h = img.size
    scale = size / min(w, h)  # ref §3: shorter side to 256
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))  # ref §3: centre 256x256 crop
    return np.asarray(img, dtype=np.uint8)


def load_image(loc, size: int, draft: bool = True):
    """``(image, tags)`` for a good file, ``(None, why it is bad)`` otherwise."""
    try:
        data = read_bytes(loc)
        if not data:
            return None, "empty file (0 bytes)"
        img, tags = decode(data, size, draft)
    except Image.UnidentifiedImageError:
        return None, "not an image file PIL can read"
    except Exception as e:  # a damaged file may fail inside any decoder
        return None, f"truncated or damaged image ({type(e).__name__}: {e})"
    return square(img, size), tags

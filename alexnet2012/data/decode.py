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

Speed, measured by :mod:`alexnet2012.bench.prepbench`: a JPEG at least twice the stored size is
decoded by PIL in draft mode (libjpeg's DCT scaling to 1/2, 1/4, 1/8, never below ``size``; the
shorter side is checked before the final resize, so no detail is lost); other RGB and greyscale
JPEGs by ``torchvision.io.decode_jpeg`` when torchvision is installed (libjpeg-turbo as in PIL:
the same pixels, bit for bit, in less time; tests/test_ilsvrc.py checks), else by PIL. The
resize is torch's antialiased bilinear on uint8 (PIL's BILINEAR to within 1 level, several
times faster than PIL's).
"""

from __future__ import annotations

import functools
import io
import os

import numpy as np
import torch
import torch.nn.functional as F
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


@functools.cache
def jpeg_decoder():
    """torchvision's ``decode_jpeg`` to (H, W, 3) uint8, or None without torchvision."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None

    def decode_rgb(data: bytes) -> np.ndarray:
        x = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        rgb = decode_jpeg(x, ImageReadMode.RGB, apply_exif_orientation=False)  # as PIL: unrotated
        return rgb.permute(1, 2, 0).numpy()

    return decode_rgb


def decode(
    data: bytes, size: int, draft: bool = True, torchvision: bool = True
) -> tuple[np.ndarray, tuple[str, ...]]:
    """RGB (H, W, 3) uint8 with shorter side >= ``size`` (or as stored, if smaller), and its
    oddity tags; raises if the file is damaged. ``draft``, ``torchvision``: the fast paths."""
    img = Image.open(io.BytesIO(data))
    tags = oddities(img)
    small = min(img.size) < 2 * size  # draft mode would not shrink it
    fast = jpeg_decoder() if torchvision else None
    if fast and small and img.format == "JPEG" and img.mode in ("RGB", "L"):
        try:
            return fast(data), tags
        except RuntimeError:  # damaged: PIL below says how, or reads what it can
            pass
    if draft and img.format == "JPEG" and not small:
        full = img.size
        img.draft("RGB", (size, size))  # DCT scaling by 1/2, 1/4, 1/8 where it stays >= size
        if min(img.size) < min(size, *full):  # never let draft mode lose resolution
            img = Image.open(io.BytesIO(data))
    return np.array(img.convert("RGB")), tags  # CMYK, greyscale, palette -> RGB


def square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to ``size``, centre ``size`` x ``size`` crop (ref §3): (size, size, 3) uint8."""
    h, w = rgb.shape[:2]
    scale = size / min(w, h)  # ref §3: shorter side to 256
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]  # (1, 3, H, W), channels-last in memory
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    left, top = (nw - size) // 2, (nh - size) // 2  # ref §3: centre 256x256 crop
    return np.ascontiguousarray(x[0, :, top : top + size, left : left + size].permute(1, 2, 0))


def load_image(loc, size: int):
    """``(image, tags)`` for a good file, ``(None, why it is bad)`` otherwise."""
    try:
        data = read_bytes(loc)
        if not data:
            return None, "empty file (0 bytes)"
        img, tags = decode(data, size)
    except Image.UnidentifiedImageError:
        return None, "not an image file PIL can read"
    except Exception as e:  # a damaged file may fail inside any decoder
        return None, f"truncated or damaged image ({type(e).__name__}: {e})"
    return square(img, size), tags

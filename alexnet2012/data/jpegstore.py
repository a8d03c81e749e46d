"""The JPEG store (``alexnet2012 prepare --format jpeg``): the same squares, a tenth of the bytes.

Why: the raw store holds 196,608 bytes a 256x256 image, 252 GB for ILSVRC-2012's training set.
The 2012 code met the same wall and kept its batches as 256x256 JPEG strings decoded on loader
threads ([C12] ``convdata_jpeg.py``, the ``layers-115-jpeg.cfg`` runs); so does this format.

Layout of DST, beside the raw store's labels, mean image and ``meta.json`` (whose ``"images"``
is ``"jpeg"`` and ``"jpeg"`` records the quality and the pixel error measured while writing):

- ``{split}_images.jpeg``: the split's JPEGs back to back (one large file, no small files);
- ``{split}_index.npy``: (N, 3) int64, each image's byte offset and length in that file and the
  CRC-32 of its bytes, checked on every read: a JPEG damaged inside its compressed data would
  otherwise decode, with a warning, into wrong pixels.

Encoding: PIL (libjpeg-turbo), quality :data:`QUALITY`, no chroma subsampling (4:4:4, so no
chroma upsampling step for a GPU decoder and the host's to differ in). The quality was chosen by
measurement on natural photographs (BENCHMARKS.md, "Input pipeline": :mod:`.jpegbench`). The
mean image and the PCA are computed from the pixels as decoded, not as encoded.

Decoding: ``torchvision.io.decode_jpeg`` (libjpeg-turbo on the host; nvJPEG, in batches, on a
CUDA device). The host decodes bit for bit as the writer's check did.
"""

from __future__ import annotations

import functools
import io
import os
import threading
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexnet2012.data.decode import load_image
from alexnet2012.data.errors import DataError

QUALITY = 90  # measured: BENCHMARKS.md "Input pipeline", the JPEG store
BLOB = "{split}_images.jpeg"
INDEX = "{split}_index.npy"


def encode(image: np.ndarray, quality: int = QUALITY) -> bytes:
    """A (S, S, 3) uint8 image as a baseline JPEG, 4:4:4."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


@functools.cache
def _decoder():
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        raise DataError(
            "a JPEG store needs torchvision to decode it; pip install torchvision "
            "(or prepare a raw store: alexnet2012 prepare SRC DST --format raw)"
        ) from None
    return functools.partial(decode_jpeg, mode=ImageReadMode.RGB, apply_exif_orientation=False)


def decode_host(data) -> np.ndarray:
    """One JPEG (bytes or a uint8 tensor) to (H, W, 3) uint8 on the host."""
    x = (
        data
        if isinstance(data, torch.Tensor)
        else torch.frombuffer(bytearray(data), dtype=torch.uint8)
    )
    return _decoder()(x).permute(1, 2, 0).numpy()


def load_jpeg(loc, size: int, quality: int = QUALITY):
    """``prepare``'s work per file for a JPEG store: ``(decoded, tags, jpeg, (sum |err|, max
    |err|))`` for a good file, where ``decoded`` is the pixels the loader will see and the error
    is theirs against the raw square; ``(None, why it is bad)`` otherwise."""
    square, tags = load_image(loc, size)
    if square is None:
        return square, tags
    data = encode(square, quality)
    decoded = decode_host(data)
    err = np.abs(decoded.astype(np.int16) - square.astype(np.int16))
    return decoded, tags, data, (int(err.sum()), int(err.max()))


def _which(rows) -> str:
    """ "image 3", or "one of the 128 images 3, 168, 141, ..." (rows as the index numbers them)."""
    rows = np.asarray(rows).reshape(-1).tolist()
    if len(rows) == 1:
        return f"image {rows[0]}"
    return f"one of the {len(rows)} images {', '.join(map(str, rows[:3]))}, ..."


class JpegImages:
    """One split of a JPEG store: ``images[rows]`` decodes (n, S, S, 3) uint8 on the host,
    :meth:`on_device` (n, 3, S, S) uint8 in one batched call on a device."""

    def __init__(self, root: Path, split: str, count: int, size: int):
        self.blob, self.size = root / BLOB.format(split=split), size
        path = root / INDEX.format(split=split)
        try:
            index = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(
                f"{path}: cannot be read ({e}); the store is damaged; rerun "
                "`alexnet2012 prepare SRC DST --format jpeg` into a new DST"
            ) from None
        have = self.blob.stat().st_size if self.blob.is_file() else -1
        ok = index.shape == (count, 3)
        end = int((index[:, 0] + index[:, 1]).max()) if ok and len(index) else 0
        if not ok or have < end:
            what = f"shape {index.shape}, not ({count}, 3)"
            if ok:
                what = f"points past the end of {self.blob.name} ({max(have, 0)} bytes)"
            raise DataError(
                f"{path}: {what}: the store is truncated or damaged; rerun "
                "`alexnet2012 prepare SRC DST --format jpeg` into a new DST"
            )
        self.index = index
        self.shape = (count, size, size, 3)
        self._fd = os.open(self.blob, os.O_RDONLY)
        self._local = threading.local()  # per loader thread: its decode buffer

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def blobs(self, rows) -> list[torch.Tensor]:
        """The JPEG bytes of ``rows``, each a uint8 tensor, their CRCs checked (``os.pread``:
        safe on any thread)."""
        out = []
        for r in np.asarray(rows).reshape(-1):
            offset, length, crc = (int(v) for v in self.index[r])
            data = bytearray(os.pread(self._fd, length, offset))
            if zlib.crc32(data) != crc:
                raise self._damaged([r], ValueError("its bytes do not match their CRC-32"))
            out.append(torch.frombuffer(data, dtype=torch.uint8))
        return out

    def _damaged(self, rows, e: Exception) -> DataError:
        return DataError(
            f"{self.blob}: {_which(rows)} does not decode "
            f"({type(e).__name__}: {e}); the store is damaged; rerun "
            "`alexnet2012 prepare SRC DST --format jpeg` into a new DST"
        )

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.asarray(rows).reshape(-1)
        return self.decode_into(rows, np.empty((len(rows), *self.shape[1:]), np.uint8))

    def decoded(self, rows) -> np.ndarray:
        """``self[rows]`` in this thread's scratch buffer, which its next call overwrites: a
        loader thread then decodes every batch into the same pages (a fresh 25 MB array per
        batch is fresh memory, tens of page faults per image, more with every thread)."""
        rows = np.asarray(rows).reshape(-1)
        buf = getattr(self._local, "buf", None)
        if buf is None or len(buf) < len(rows):
            buf = self._local.buf = np.empty((len(rows), *self.shape[1:]), np.uint8)
        return self.decode_into(rows, buf[: len(rows)])

    def decode_into(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The images of ``rows`` decoded on this thread straight into ``out`` (n, S, S, 3)."""
        for k, data in enumerate(self.blobs(rows)):
            try:
                out[k] = decode_host(data)
            except (RuntimeError, ValueError) as e:
                raise self._damaged(rows[k : k + 1], e) from None
        return out

    def on_device(self, rows, device: torch.device) -> torch.Tensor:
        """(n, 3, S, S) uint8 on ``device``, decoded there in one batch (nvJPEG on CUDA)."""
        blobs = self.blobs(rows)
        try:
            return torch.stack(_decoder()(blobs, device=device))
        except (RuntimeError, ValueError) as e:
            raise self._damaged(rows, e) from None

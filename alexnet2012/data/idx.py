"""Read the IDX files that MNIST and Fashion-MNIST ship in, gzipped or not, with numpy.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian int32 per dimension, then the values. Every problem raises :class:`DataError`
naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from alexnet2012.data.errors import DataError

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (count, rows, cols)
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (count)
_FIX = "delete it and fetch the data set again (apt-get install -y dataset-fashion-mnist)"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when the name ends in .gz (or the file starts like gzip)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e}); check the path") from None
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: broken or truncated gzip data ({e}); {_FIX}") from None
    return raw


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """The array in IDX file ``path``, whose magic number must be ``magic`` (2051 or 2049).

    Checks the magic number, that no dimension is zero, and that the byte count is exactly
    header + product of the dimensions. Returns a read-only-safe copy (uint8).
    """
    path = Path(path)
    data = _read_bytes(path)
    kind = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}.get(magic, "data")
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX header; {_FIX}")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(
            f"{path}: magic number {found} is not {magic} (IDX {kind}); this is not an IDX "
            f"{kind} file or it is damaged; {_FIX}"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: header cut short ({len(data)} of {header} bytes); {_FIX}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if any(d == 0 for d in dims):
        raise DataError(f"{path}: an IDX dimension is zero {dims}; {_FIX}")
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: {problem}: {len(data)} bytes where dimensions {dims} need {expected}; {_FIX}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_images(path: str | Path) -> np.ndarray:
    """IDX images as uint8 (N, rows, cols)."""
    return read_idx(path, IMAGES_MAGIC)


def read_labels(path: str | Path) -> np.ndarray:
    """IDX labels as uint8 (N,)."""
    return read_idx(path, LABELS_MAGIC)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write uint8 ``array`` (1 or 3 dims) as IDX, gzipped when ``path`` ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = head + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)

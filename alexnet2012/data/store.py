"""The prepared image store: what ``alexnet2012 prepare SRC DST`` writes and training reads.

Layout of DST (all images RGB uint8, shorter side resized to ``size`` and centre-cropped, ref §3):

- ``train_images.npy``, ``val_images.npy``: (N, size, size, 3) uint8, opened memory-mapped;
- ``train_labels.npy``, ``val_labels.npy``: (N,) int64 class indices;
- ``mean.npy``: (size, size, 3) float32, the per-pixel mean of the training images (0-255);
- ``meta.json``: classes (WNIDs for ImageNet, sorted: the label is the index) and their
  human-readable ``class_names``, the source layout, counts, skipped files with reasons, counts
  of odd files (CMYK, greyscale, ...), and the RGB PCA of the training pixels (0-255 scale,
  ascending std-devs sqrt(lambda), eigenvectors as columns: ref §3). Stores written before
  ``class_names`` existed still load (the names are then the classes).

``meta.json`` is written last, so its presence means the store is complete. A JPEG store
(``prepare --format jpeg``, ``"images": "jpeg"`` in ``meta.json``) keeps the images as JPEGs
instead of ``{split}_images.npy``: see :mod:`alexnet2012.data.jpegstore`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from alexnet2012.data.errors import DataError
from alexnet2012.data.jpegstore import JpegImages
from alexnet2012.files import write_atomic

FORMAT = 1
META = "meta.json"
PROGRESS = "progress.json"
SPLITS = ("train", "val")


def write_json(path: Path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=1) + "\n").encode())


def shrink_npy(path: Path, rows: int) -> None:
    """Cut the .npy array at ``path`` to its first ``rows`` rows, in place (header + truncate).

    The new header is padded with spaces to the old header's length, so the data offset does
    not move; repeating the call is harmless.
    """
    with open(path, "r+b") as f:
        version = np.lib.format.read_magic(f)
        if version != (1, 0):
            raise DataError(f"{path}: unexpected .npy version {version}; delete it and rerun")
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        offset = f.tell()
        new_shape = (rows, *shape[1:])
        text = repr(
            {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": fortran,
                "shape": new_shape,
            }
        )
        header = text.ljust(offset - 10 - 1).encode("latin1") + b"\n"
        f.seek(0)
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)
        f.truncate(offset + rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


class Store:
    """A complete prepared store, opened read-only; images stay on disk (memory-mapped)."""

    def __init__(self, root: str | Path):
        if not str(root):  # Path("") would silently mean the working folder
            raise DataError(
                "data.root is empty: set it to the folder `alexnet2012 prepare SRC DST` wrote (DST)"
            )
        self.root = Path(root).expanduser()
        meta = self.root / META
        if not self.root.is_dir():
            what = "is a file, not a folder" if self.root.exists() else "no such folder"
            raise DataError(
                f"data.root {self.root}: {what}; set data.root to the folder that "
                "`alexnet2012 prepare SRC DST` wrote (DST)"
            )
        if not meta.is_file():
            if (self.root / PROGRESS).is_file():
                raise DataError(
                    f"{self.root}: the image store is unfinished (prepare was interrupted); run "
                    f"`alexnet2012 prepare SRC {self.root}` again with the same SRC to finish it"
                )
            raise DataError(
                f"{self.root}: no prepared image store here (no "
                f"{META}); run `alexnet2012 prepare SRC DST` on SRC holding the ILSVRC-2012 "
                "files or train/ and val/ ImageFolder trees, and set data.root to DST"
            )
        try:
            self.meta = json.loads(meta.read_text())
        except ValueError as e:  # not JSON, or not even text (UnicodeDecodeError)
            raise DataError(
                f"{meta}: not valid JSON ({e}); rerun `alexnet2012 prepare SRC DST` into a new DST"
            ) from None
        keys = ("format", "size", "classes", "pca")
        if not isinstance(self.meta, dict) or not all(k in self.meta for k in keys):
            raise DataError(
                f"{meta}: not the metadata `alexnet2012 prepare` writes (needs {', '.join(keys)}); "
                "rerun `alexnet2012 prepare SRC DST` into a new DST"
            )
        if self.meta.get("format") != FORMAT:
            raise DataError(
                f"{meta}: store format {self.meta.get('format')} is not {FORMAT}; "
                "rerun `alexnet2012 prepare SRC DST` into a new DST"
            )
        self.kind: str = self.meta.get("images", "raw")  # raw arrays, or jpeg
        if self.kind not in ("raw", "jpeg"):
            raise DataError(f"{meta}: images {self.kind!r} is not raw or jpeg; rerun prepare")
        self.size: int = self.meta["size"]
        self.classes: list[str] = self.meta["classes"]
        self.class_names: list[str] = self.meta.get("class_names") or list(self.classes)
        self.pca_stdevs = np.asarray(self.meta["pca"]["stdevs"], dtype=np.float64)
        self.pca_eigvecs = np.asarray(self.meta["pca"]["eigvecs"], dtype=np.float64)
        self.mean = self._load("mean.npy", (self.size, self.size, 3))

    def _load(self, name: str, shape: tuple, mmap: bool = False) -> np.ndarray:
        path = self.root / name
        try:
            array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot be read ({e}); rerun prepare into a new DST") from None
        if array.shape != shape:
            raise DataError(
                f"{path}: shape {array.shape} is not {shape} as {META} says; the "
                "store is damaged; rerun prepare into a new DST"
            )
        return array

    def count(self, split: str) -> int:
        return self.meta["splits"][split]["count"]

    def images(self, split: str) -> np.ndarray | JpegImages:
        """(N, size, size, 3) uint8, memory-mapped; a JPEG store's decode when indexed."""
        if self.kind == "jpeg":
            return JpegImages(self.root, split, self.count(split), self.size)
        return self._load(f"{split}_images.npy", (self.count(split), self.size, self.size, 3), True)

    def labels(self, split: str) -> np.ndarray:
        """(N,) int64."""
        return self._load(f"{split}_labels.npy", (self.count(split),))

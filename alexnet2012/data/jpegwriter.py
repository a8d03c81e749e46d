"""Resumable writing of the JPEG store (:mod:`.jpegstore`): the raw writer's commits and statistics,
with each chunk's JPEGs appended to one file and their offsets to an index.

The commit point is still ``progress.json``: it records how many bytes of ``{split}_images.jpeg``
are committed, and a resumed run cuts the file back to that length before appending, so bytes a
crash left after the last commit are overwritten and the store is byte-identical to an unbroken
run's. Per split it also sums the pixel error of the decoded JPEGs against the raw squares.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from alexnet2012.data.jpegstore import BLOB, INDEX
from alexnet2012.data.writer import StoreWriter, _open_npy, _pwrite


class JpegStoreWriter(StoreWriter):
    """Owns a JPEG store's DST while ``prepare --format jpeg`` runs."""

    def __init__(self, dst: Path, items: dict, size: int, chunk: int, fingerprint: str,
                 quality: int):  # fmt: skip
        super().__init__(dst, items, size, chunk, fingerprint)
        self.quality = quality
        self.rows = {"index": (np.int64, (3,)), "labels": (np.int64, ())}
        for s in self.state["splits"].values():
            for key in ("bytes", "err_sum", "err_max"):
                s.setdefault(key, 0)

    def bytes_left(self, split: str) -> int:
        """A bound, not an estimate: a third of the raw bytes (measured: a tenth to an eighth)."""
        return (len(self.items[split]) - self.state["splits"][split]["done"]) * self.size**2

    def _open(self, split: str) -> tuple:
        if split not in self._files:
            s = self.state["splits"][split]
            n, fresh = len(self.items[split]), s["done"] == 0
            blob = self.dst / BLOB.format(split=split)
            with open(blob, "wb" if fresh else "ab") as f:
                f.truncate(s["bytes"])  # drop what a crash left after the last commit
            index = _open_npy(self.dst / INDEX.format(split=split), np.int64, (n, 3), fresh)
            labels = _open_npy(self.dst / f"{split}_labels.npy", np.int64, (n,), fresh)
            self._files[split] = ((open(blob, "r+b"), 0), index, labels)
        return self._files[split]

    def _write_rows(self, split: str, s: dict, kept: list) -> None:
        """``kept``: (decoded image, label, JPEG bytes, (sum |err|, max |err|)) per image."""
        (fb, _), (fi, oi), (fl, ol) = self._open(split)
        k0, at = s["kept"], s["bytes"]
        lengths = np.array([len(data) for _, _, data, _ in kept], np.int64)
        offsets = at + np.cumsum(lengths) - lengths
        crcs = np.array([zlib.crc32(data) for _, _, data, _ in kept], np.int64)
        _pwrite(fb, [np.frombuffer(data, np.uint8) for _, _, data, _ in kept], at)
        _pwrite(fi, [np.stack([offsets, lengths, crcs], 1)], oi + k0 * 24)
        labels = np.array([label for _, label, _, _ in kept], np.int64)
        _pwrite(fl, [labels], ol + k0 * labels.itemsize)
        s["bytes"] = at + int(lengths.sum())
        s["err_sum"] += sum(e[0] for *_, e in kept)
        s["err_max"] = max([s["err_max"], *(e[1] for *_, e in kept)])

    def finish_split(self, split: str) -> None:
        s = self.state["splits"][split]
        if not s["finished"]:
            with open(self.dst / BLOB.format(split=split), "ab") as f:
                f.truncate(s["bytes"])
        super().finish_split(split)

    def meta_extra(self) -> dict:
        """``"images": "jpeg"``, the quality, and per split the bytes per image and the pixel
        error of the decoded JPEGs against the raw squares (0-255 levels)."""
        report = {"quality": self.quality, "subsampling": "4:4:4"}
        for split, s in self.state["splits"].items():
            values = s["kept"] * self.size**2 * 3
            report[split] = {
                "bytes": s["bytes"],
                "bytes_per_image": s["bytes"] / max(1, s["kept"]),
                "mean_abs_error": s["err_sum"] / max(1, values),
                "max_abs_error": s["err_max"],
            }
        return {"images": "jpeg", "jpeg": report}

"""Resumable writing of the image store: chunk commits, running statistics, finishing.

State lives in ``DST/progress.json`` (atomic rename) plus the running sums it names
(``stats-<n>.npz``, a new file per commit), so a crash at any moment leaves a consistent state:
a chunk counts as done only once ``progress.json`` says so, and its images are rewritten if not.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from alexnet2012.data.errors import DataError
from alexnet2012.data.store import (
    FORMAT,
    META,
    PROGRESS,
    SPLITS,
    shrink_npy,
    write_json,
)
from alexnet2012.files import write_atomic

log = logging.getLogger(__name__)


def read_state(path: Path) -> dict:
    """A JSON object that prepare wrote (meta.json, progress.json); DataError naming the file."""
    try:
        state = json.loads(path.read_text())
    except ValueError as e:
        state, why = None, f"not valid JSON ({e})"
    else:
        why = f"a {type(state).__name__}, not a JSON object"
    if not isinstance(state, dict):
        raise DataError(f"{path}: {why}; delete DST and run `alexnet2012 prepare SRC DST` again")
    return state


def save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    write_atomic(path, buf.getvalue())


def _open_npy(path: Path, dtype, shape: tuple, fresh: bool) -> tuple:
    """An .npy file opened for writing rows, and its data offset; ``fresh`` (re)creates it."""
    if fresh:
        with open(path, "wb") as f:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype))}
            header.update(fortran_order=False, shape=shape)
            np.lib.format.write_array_header_1_0(f, header)
            f.truncate(f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)  # sparse
    f = open(path, "r+b")
    np.lib.format.read_magic(f)
    np.lib.format.read_array_header_1_0(f)
    return f, f.tell()


def _pwrite(f, arrays: list, offset: int) -> None:
    """Write ``arrays`` back to back at ``offset`` (no copy), then flush them to the disk."""
    views = [memoryview(np.ascontiguousarray(a)).cast("B") for a in arrays]
    while views:
        n = os.pwritev(f.fileno(), views[:512], offset)  # IOV_MAX is 1024 on Linux
        offset += n
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if n:
            views[0] = views[0][n:]
    os.fdatasync(f.fileno())


def second_moments(image: np.ndarray) -> np.ndarray:
    """Sum over pixels of x x^T, x the RGB bytes: (3, 3) int64, exact.

    float32 products of bytes (<= 65025) summed over blocks of 256 pixels stay below 2^24,
    so every block's sum is exact in any order; the blocks are added in int64.
    """
    x = image.reshape(-1, 3)
    pad = -len(x) % 256
    if pad:
        x = np.concatenate([x, np.zeros((pad, 3), np.uint8)])
    x = x.astype(np.float32).reshape(-1, 256, 3)  # (blocks, 256, 3)
    return np.matmul(x.transpose(0, 2, 1), x).astype(np.int64).sum(0)


def pca(pixel_sum: np.ndarray, outer: np.ndarray, pixels: int) -> tuple[list, list]:
    """Std-devs sqrt(lambda), ascending, and eigenvectors (columns) of the RGB covariance."""
    mu = pixel_sum / pixels
    cov = outer / pixels - np.outer(mu, mu)  # 0-255 scale, as [C14]'s constants (ref §3)
    vals, vecs = np.linalg.eigh(cov)  # ascending, like [C14]
    return np.sqrt(np.clip(vals, 0, None)).tolist(), vecs.tolist()


def _new_state(fingerprint: str, size: int, chunk: int) -> dict:
    blank = {"done": 0, "kept": 0, "bad": [], "odd": {}, "finished": False}
    splits = {s: dict(blank) for s in SPLITS}
    return {"format": FORMAT, "fingerprint": fingerprint, "size": size, "chunk": chunk,
            "seq": 0, "stats": None, "splits": splits}  # fmt: skip


def _image_sum(images: list) -> np.ndarray:
    """Per-pixel sum of (size, size, 3) uint8 images, int64."""
    acc = np.zeros(images[0].shape, np.uint32)  # exact below 2^24 images a chunk
    for im in images:
        np.add(acc, im, out=acc)
    return acc.astype(np.int64)


def _added(counts: dict, more: dict) -> dict:
    """Tag counts plus more, sorted by tag (so progress.json and meta.json are reproducible)."""
    out = dict(counts)
    for tag, n in more.items():
        out[tag] = out.get(tag, 0) + n
    return dict(sorted(out.items()))


def _save_stats(dst: Path, state: dict, total: np.ndarray, outer: np.ndarray) -> None:
    """The running training sums, to a new ``stats-<n>.npz`` that ``state`` then names."""
    state["seq"] += 1
    state["stats"] = f"stats-{state['seq']}.npz"
    buf = io.BytesIO()
    np.savez(buf, sum=total, outer=outer)
    write_atomic(dst / state["stats"], buf.getvalue())


def _split_meta(dst: Path, split: str, s: dict, items: list, classes: int) -> dict:
    labels = np.load(dst / f"{split}_labels.npy", allow_pickle=False)
    return {
        "count": s["kept"],
        "files": len(items),
        "bad": s["bad"],
        "oddities": s.get("odd", {}),
        "class_counts": np.bincount(labels, minlength=classes).tolist(),
    }


def _resumed_state(dst: Path, fingerprint: str) -> dict:
    state = read_state(dst / PROGRESS)
    if state.get("fingerprint") != fingerprint:
        raise DataError(
            f"{dst} holds an unfinished store made from other files, another size or another "
            "--format/--quality; rerun with the original ones, or delete DST to start afresh"
        )
    done = {s: v["done"] for s, v in state["splits"].items()}
    log.info("resuming the store in %s (files done: %s)", dst, done)
    return state


def _log_done(dst: Path, classes: list[str], splits: dict) -> None:
    empty = [c for c, k in zip(classes, splits["train"]["class_counts"], strict=True) if not k]
    if empty:
        log.warning("classes with no training images: %s", ", ".join(empty))
    if not splits["val"]["count"]:
        log.warning("the store has no validation images; evaluation will be empty")
    log.info(
        "store ready in %s: %d train, %d val images",
        dst, splits["train"]["count"], splits["val"]["count"],
    )  # fmt: skip


class StoreWriter:
    """Owns DST while ``prepare`` runs; resumes from ``progress.json`` when it exists."""

    def __init__(self, dst: Path, items: dict, size: int, chunk: int, fingerprint: str):
        self.dst, self.items, self.size = dst, items, size
        self.resumed = (dst / PROGRESS).is_file()
        if self.resumed:
            self.state = _resumed_state(dst, fingerprint)
        else:
            self.state = _new_state(fingerprint, size, chunk)
        self.chunk = self.state["chunk"]  # keep the first run's chunking
        self.sum = np.zeros((size, size, 3), np.int64)  # per-pixel sum of training images
        self.outer = np.zeros((3, 3), np.int64)  # sum of x x^T over training pixels
        if self.state["stats"]:
            with np.load(dst / self.state["stats"], allow_pickle=False) as f:
                self.sum, self.outer = f["sum"], f["outer"]
        self._files: dict[str, tuple] = {}
        # the .npy arrays of a split, cut to the rows kept when it finishes: dtype, row shape
        self.rows = {"images": (np.uint8, (size, size, 3)), "labels": (np.int64, ())}

    def chunks_left(self, split: str) -> list[tuple[int, int]]:
        s, n = self.state["splits"][split], len(self.items[split])
        if s["finished"]:
            return []
        return [(lo, min(lo + self.chunk, n)) for lo in range(s["done"], n, self.chunk)]

    def bytes_left(self, split: str) -> int:
        return (len(self.items[split]) - self.state["splits"][split]["done"]) * self.size**2 * 3

    def _open(self, split: str) -> tuple:
        """(file, data offset) of the split's images and labels; a fresh split creates them."""
        if split not in self._files:
            n, fresh = len(self.items[split]), self.state["splits"][split]["done"] == 0
            shape = (n, self.size, self.size, 3)
            images = _open_npy(self.dst / f"{split}_images.npy", np.uint8, shape, fresh)
            labels = _open_npy(self.dst / f"{split}_labels.npy", np.int64, (n,), fresh)
            self._files[split] = (images, labels)
        return self._files[split]

    def commit(self, split: str, done: int, kept: list, bad: list, odd=None, moments=None) -> None:
        """Write one chunk's ``kept`` (image, label) pairs, then record it as done.

        ``odd``: the chunk's oddity counts; ``moments``: each kept image's
        :func:`second_moments` if the workers computed them. Rows go in by ``pwritev`` (a full
        disk is ENOSPC, not a memory map's SIGBUS), on disk before ``progress.json`` says so.
        """
        s = self.state["splits"][split]
        k0, n = s["kept"], len(kept)
        images = [im for im, *_ in kept]  # each (size, size, 3) uint8
        if n:
            self._write_rows(split, s, kept)
        if n and split == "train":
            self.sum += _image_sum(images)
            for m in moments if moments is not None else map(second_moments, images):
                self.outer += m
        s["done"], s["kept"], s["bad"] = done, k0 + n, s["bad"] + bad
        s["odd"] = _added(s.get("odd", {}), odd or {})
        old = self.state["stats"]
        if n and split == "train":
            _save_stats(self.dst, self.state, self.sum, self.outer)
        write_json(self.dst / PROGRESS, self.state)  # the commit point
        if old and old != self.state["stats"]:
            (self.dst / old).unlink(missing_ok=True)

    def _write_rows(self, split: str, s: dict, kept: list) -> None:
        """The images and labels of ``kept`` after the ``s["kept"]`` rows already written."""
        k0, images = s["kept"], [im for im, *_ in kept]
        labels = np.array([label for _, label, *_ in kept], np.int64)
        (fi, oi), (fl, ol) = self._open(split)
        _pwrite(fi, images, oi + k0 * images[0].nbytes)
        _pwrite(fl, [labels], ol + k0 * labels.itemsize)

    def close(self) -> None:
        for files in self._files.values():
            for f, _ in files:
                f.close()
        self._files.clear()

    def meta_extra(self) -> dict:
        """Keys a store format adds to ``meta.json``."""
        return {}

    def finish_split(self, split: str) -> None:
        """Cut the split's arrays to the images kept (bad files leave no rows)."""
        s = self.state["splits"][split]
        if s["finished"]:
            return
        for f, _ in self._files.pop(split, ()):
            f.close()
        for kind, (dtype, row) in self.rows.items():
            path = self.dst / f"{split}_{kind}.npy"
            if self.items[split]:
                shrink_npy(path, s["kept"])
            else:  # no files at all: an empty array
                save_npy(path, np.zeros((0, *row), dtype))
        s["finished"] = True
        write_json(self.dst / PROGRESS, self.state)

    def finish(
        self, classes: list[str], how: str, src: str, names: list | None = None, layout: str = ""
    ) -> dict:
        """Mean image, PCA and ``meta.json`` (written last: the store is then complete);
        ``names``: a human-readable name per class (``meta.mat`` words for ImageNet)."""
        kept = self.state["splits"]["train"]["kept"]
        if kept == 0:
            raise DataError(f"{src}: none of the training files could be read; see the log")
        pixels = kept * self.size**2
        save_npy(self.dst / "mean.npy", (self.sum / kept).astype(np.float32))  # (S, S, 3)
        stdevs, vecs = pca(self.sum.sum((0, 1)), self.outer, pixels)
        splits = {
            s: _split_meta(self.dst, s, self.state["splits"][s], self.items[s], len(classes))
            for s in SPLITS
        }
        meta = {"format": FORMAT, "fingerprint": self.state["fingerprint"], "size": self.size,
                "source": src, "split": how, "layout": layout, "classes": classes,
                "class_names": list(names or classes), "splits": splits,
                "rgb_mean": (self.sum.sum((0, 1)) / pixels).tolist(),
                "pca": {"stdevs": stdevs, "eigvecs": vecs}, **self.meta_extra()}  # fmt: skip
        write_json(self.dst / META, meta)
        for name in [PROGRESS, *(p.name for p in self.dst.glob("stats-*.npz"))]:
            (self.dst / name).unlink(missing_ok=True)
        _log_done(self.dst, classes, splits)
        return meta

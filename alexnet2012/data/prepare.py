"""``alexnet2012 prepare SRC DST``: ILSVRC-2012 (or an ImageFolder tree) to the store (ref §3).

SRC is recognised and listed by :mod:`alexnet2012.data.layouts` (the three official files read
in place, their extracted layout, Kaggle's CLS-LOC, ImageFolder trees); the layout is logged and
returned in the summary. Every image is decoded once by :mod:`alexnet2012.data.decode` in
``workers`` processes: RGB, shorter side to 256, centre 256x256 crop (ref §3), written as uint8
into ``DST/{train,val}_images.npy`` with the per-pixel mean image and the RGB pixel PCA of the
training set. A progress bar shows images/s and the time left. With ``images="jpeg"``
(``--format jpeg``) the squares are stored as JPEGs instead (:mod:`.jpegstore`), and the mean
and PCA are those of the decoded pixels.

Work is committed in chunks; ``progress.json`` (written atomically) records the chunks done, so
rerunning the same command after an interruption (Ctrl-C, a kill, a full disk) continues where
it stopped, and the store is byte-identical to an unbroken run's. ``meta.json`` is written last:
until it exists, training refuses the store. Bad files are skipped and reported, or stop the run.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from alexnet2012.data.decode import jpeg_decoder, load_image
from alexnet2012.data.errors import DataError
from alexnet2012.data.jpegstore import QUALITY, load_jpeg
from alexnet2012.data.jpegwriter import JpegStoreWriter
from alexnet2012.data.layouts import detect
from alexnet2012.data.store import FORMAT, META, PROGRESS, SPLITS
from alexnet2012.data.workers import Decoders
from alexnet2012.data.writer import StoreWriter, read_state

log = logging.getLogger(__name__)

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _fingerprint(items: dict, size: int, images: str = "raw") -> str:
    h = hashlib.sha256(f"{FORMAT} {size}\n".encode())
    if images != "raw":  # a raw store's fingerprint is as before the JPEG store existed
        h.update(f"images {images}\n".encode())
    for split in SPLITS:
        for f, label, *_ in items[split]:
            h.update(f"{split}\t{label}\t{f}\n".encode())
    return h.hexdigest()


def _summary(dst: Path, meta: dict, resumed: bool, already: bool) -> dict:
    bad = [b for s in SPLITS for b in meta["splits"][s]["bad"]]
    odd: dict[str, int] = {}
    for s in SPLITS:
        for tag, n in meta["splits"][s].get("oddities", {}).items():
            odd[tag] = odd.get(tag, 0) + n
    return {
        "dst": str(dst),
        "layout": meta.get("layout", ""),
        "size": meta["size"],
        "classes": len(meta["classes"]),
        "train": meta["splits"]["train"]["count"],
        "val": meta["splits"]["val"]["count"],
        "files": sum(meta["splits"][s]["files"] for s in SPLITS),
        "bad": bad,
        "bad_count": len(bad),
        "oddities": dict(sorted(odd.items())),
        "split": meta["split"],
        "resumed": resumed,
        "already_done": already,
        **({"jpeg": meta["jpeg"]} if "jpeg" in meta else {}),  # bytes per image, pixel error
    }


def _chunk(dst: Path, chunk: int) -> int:
    """The chunk size in force: an unfinished store keeps its first run's."""
    try:
        return int(read_state(dst / PROGRESS)["chunk"])
    except (OSError, DataError, KeyError, TypeError, ValueError):
        return chunk


def prepare_main(
    src: str,
    dst: str,
    size: int = 256,
    on_bad: str = "skip",
    workers: int | None = None,
    chunk: int = 1024,
    on_commit=None,
    images: str = "raw",
    quality: int = QUALITY,
) -> dict:
    """Build (or finish) the store in ``dst`` from ``src``; a summary dict.

    ``src``: see :mod:`alexnet2012.data.layouts`. ``on_bad``: ``skip`` reports bad files and
    goes on, ``stop`` raises :class:`DataError` naming the file. ``workers``: decoding
    processes (default: the cores available; 0 or 1 = in this process). ``chunk``: images per
    committed unit of work. ``on_commit(split, done)``: called after each commit. ``images``:
    ``raw`` (uint8 arrays) or ``jpeg`` (:mod:`.jpegstore`, at ``quality``).
    """
    if images not in ("raw", "jpeg"):
        raise ValueError(f"images must be 'raw' or 'jpeg', got {images!r}")
    if images == "jpeg" and not 1 <= quality <= 100:
        raise DataError(f"JPEG quality {quality} is not within 1..100; give --quality 1..100")
    if on_bad not in ("skip", "stop"):
        raise ValueError(f"on_bad must be 'skip' or 'stop', got {on_bad!r}")
    src_p, dst_p = Path(src).expanduser(), Path(dst).expanduser()
    if dst_p.exists() and not dst_p.is_dir():
        raise DataError(f"DST {dst_p} is a file; give a folder for the store")
    workers = default_workers() if workers is None else workers
    jpeg_decoder()  # imported once, before the fork
    # forked before the listing exists, so the workers never hold (or copy) it
    decoders = Decoders(workers, 2 * _chunk(dst_p, chunk), size)  # two chunks in flight
    try:
        form = (images, quality)
        return _prepare(src_p, dst_p, size, on_bad, chunk, decoders, on_commit, form)
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        raise DataError(
            f"{dst_p}: disk full ({e.strerror}); the store is unfinished and training refuses "
            "it; free space, then rerun the same command: it continues where it stopped"
        ) from None
    finally:
        decoders.close()


def _prepare(src: Path, dst: Path, size, on_bad, chunk, decoders, on_commit, form):
    listing = detect(src)
    if not listing.items["train"]:
        raise DataError(f"{src}: no training files found")
    images, quality = form
    fingerprint = _fingerprint(
        listing.items, size, images if images == "raw" else f"jpeg {quality}"
    )
    dst.mkdir(parents=True, exist_ok=True)
    if (dst / META).is_file():
        meta = read_state(dst / META)
        if meta.get("fingerprint") != fingerprint:
            raise DataError(
                f"{dst} already holds a store made from other files, another size or another "
                "--format or --quality; choose a new DST or delete this one"
            )
        log.info("%s is already prepared", dst)
        return _summary(dst, meta, resumed=False, already=True)
    if images == "jpeg":
        writer = JpegStoreWriter(dst, listing.items, size, chunk, fingerprint, quality)
    else:
        writer = StoreWriter(dst, listing.items, size, chunk, fingerprint)
    try:
        for split in SPLITS:
            _run_split(writer, split, src, decoders, on_bad, on_commit)
    finally:
        writer.close()
    meta = writer.finish(listing.classes, listing.how, str(src), listing.names, listing.layout)
    return _summary(dst, meta, resumed=writer.resumed, already=False)


def _check_space(writer, split: str) -> None:
    free = shutil.disk_usage(writer.dst).free
    if free < writer.bytes_left(split):
        raise DataError(
            f"{writer.dst}: {free / 2**30:.1f} GiB free, but the {split} images need "
            f"{writer.bytes_left(split) / 2**30:.1f} GiB more; free space or "
            "choose another DST"
        )


def _run_split(writer, split: str, src: Path, decoders, on_bad: str, on_commit) -> None:
    todo = writer.chunks_left(split)
    if not todo:
        writer.finish_split(split)
        return
    _check_space(writer, split)
    files, chunk = writer.items[split], writer.chunk
    if isinstance(writer, JpegStoreWriter):
        load = functools.partial(load_jpeg, size=writer.size, quality=writer.quality)
    else:
        load = functools.partial(load_image, size=writer.size)

    def submit(k: int):  # chunk k decodes into slot half k % 2, while chunk k - 1 commits
        lo, hi = todo[k]
        return decoders.map(load, [loc for _, _, loc in files[lo:hi]], (k % 2) * chunk)

    bar = tqdm(
        total=len(files), initial=todo[0][0], desc=f"prepare {split}", unit="img", mininterval=1.0
    )
    with bar:
        pending = submit(0)
        for k, (lo, hi) in enumerate(todo):
            results, pending = pending, submit(k + 1) if k + 1 < len(todo) else None
            kept, moments, bad, odd = [], [], [], {}
            for j, (ok, note, m, *extra) in enumerate(results):
                bar.update()
                name, label, _ = files[lo + j]
                if not ok:
                    bad.append(_bad(src, split, name, note, on_bad))
                    continue
                kept.append((decoders.slots[(k % 2) * chunk + j], label, *extra))
                moments.append(m)
                for tag in note:
                    odd[tag] = odd.get(tag, 0) + 1
            writer.commit(split, hi, kept, bad, odd, moments)
            if on_commit is not None:
                on_commit(split, hi)
    writer.finish_split(split)


def _bad(src: Path, split: str, name: str, reason: str, on_bad: str) -> dict:
    if on_bad == "stop":
        raise DataError(
            f"{src / name}: {reason}; remove or replace the file, or "
            "rerun with on_bad=skip (--on-bad skip) to skip bad files"
        )
    log.warning("skipping %s: %s", src / name, reason)
    return {"split": split, "file": name, "reason": reason}

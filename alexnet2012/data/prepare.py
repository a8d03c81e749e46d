"""Turn an ImageFolder tree into the memory-mapped store training reads (ref §3).

``prepare_main(SRC, DST)`` decodes every image once: RGB, shorter side to 256, centre 256x256
crop (ref §3), written as uint8 into ``DST/{train,val}_images.npy``. It also computes the
per-pixel mean image and the RGB pixel PCA of the training set. Work is committed in chunks;
``progress.json`` (written atomically) records the chunks done, so rerunning after an
interruption continues where it stopped. Bad files are skipped and reported, or stop the run.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .errors import DataError
from .store import FORMAT, META, SPLITS
from .writer import StoreWriter, read_state

log = logging.getLogger(__name__)

VAL_FRACTION = 0.1  # one tree: 90/10 train/val split per class
SPLIT_SEED = 0


def _files(folder: Path, root: Path) -> list[str]:
    """Every non-hidden file under ``folder`` (recursively, like ImageFolder), relative, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out += [
            os.path.relpath(os.path.join(dirpath, f), root)
            for f in filenames
            if not f.startswith(".")
        ]
    return sorted(out)


def _class_dirs(tree: Path) -> list[str]:
    names = sorted(p.name for p in tree.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(
            f"{tree}: no class folders; an ImageFolder tree holds one folder per class "
            "(train/<class>/*.JPEG); ImageNet's flat val/ folder must first be sorted into "
            "class folders"
        )
    return names


def scan(src: Path) -> tuple[list[str], dict[str, list[tuple[str, int]]], str]:
    """Classes, each split's (relative path, label) list, and how the split was made."""
    if not src.is_dir():
        raise DataError(f"{src}: no such folder; SRC must be an ImageFolder tree")
    train_dir = src / "train"
    if train_dir.is_dir():
        classes = _class_dirs(train_dir)
        items = {
            "train": [(f, i) for i, c in enumerate(classes) for f in _files(train_dir / c, src)]
        }
        if (src / "val").is_dir():
            val_classes = _class_dirs(src / "val")
            unknown = sorted(set(val_classes) - set(classes))
            if unknown:
                raise DataError(
                    f"{src / 'val' / unknown[0]}: class folder {unknown[0]!r} is not "
                    f"in {train_dir}; val/ and train/ need the same class names"
                )
            index = {c: i for i, c in enumerate(classes)}
            items["val"] = [
                (f, index[c]) for c in val_classes for f in _files(src / "val" / c, src)
            ]
            return classes, items, "given: train/ and val/"
        tree, how = train_dir, "split: train/ 90/10 into train and val (seeded, per class)"
    else:
        tree, how = src, "split: one tree 90/10 into train and val (seeded, per class)"
    classes = _class_dirs(tree)
    items = {"train": [], "val": []}
    for i, c in enumerate(classes):
        files = _files(tree / c, src)
        rng = np.random.default_rng([SPLIT_SEED, i])  # deterministic per class
        n_val = int(round(VAL_FRACTION * len(files))) if len(files) > 1 else 0
        val = set(rng.permutation(len(files))[:n_val].tolist())
        for j, f in enumerate(files):
            items["val" if j in val else "train"].append((f, i))
    return classes, items, how


def load_image(path: str, size: int):
    """(uint8 (size, size, 3), None) or (None, why the file is bad). Runs in the workers."""
    try:
        if os.path.getsize(path) == 0:
            return None, "empty file (0 bytes)"
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at 1/2, 1/4, 1/8 scale if >= size
            img = img.convert("RGB")  # greyscale, CMYK, palette -> RGB
    except Image.UnidentifiedImageError:
        return None, "not an image file PIL can read"
    except Exception as e:  # a damaged file may fail inside any decoder
        return None, f"truncated or damaged image ({type(e).__name__}: {e})"
    w, h = img.size
    scale = size / min(w, h)  # ref §3: shorter side to 256
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))  # ref §3: centre 256x256 crop
    return np.asarray(img, dtype=np.uint8), None


def _fingerprint(items: dict, size: int) -> str:
    h = hashlib.sha256(f"{FORMAT} {size}\n".encode())
    for split in SPLITS:
        for f, label in items[split]:
            h.update(f"{split}\t{label}\t{f}\n".encode())
    return h.hexdigest()


def _summary(dst: Path, meta: dict, resumed: bool, already: bool) -> dict:
    bad = [b for s in SPLITS for b in meta["splits"][s]["bad"]]
    return {
        "dst": str(dst),
        "size": meta["size"],
        "classes": len(meta["classes"]),
        "train": meta["splits"]["train"]["count"],
        "val": meta["splits"]["val"]["count"],
        "files": sum(meta["splits"][s]["files"] for s in SPLITS),
        "bad": bad,
        "bad_count": len(bad),
        "split": meta["split"],
        "resumed": resumed,
        "already_done": already,
    }


def prepare_main(
    src: str,
    dst: str,
    size: int = 256,
    on_bad: str = "skip",
    workers: int | None = None,
    chunk: int = 1024,
) -> dict:
    """Build (or finish) the store in ``dst`` from the ImageFolder tree ``src``; a summary dict.

    ``src`` holds ``train/`` and ``val/`` trees of class folders, or is one tree (then split
    90/10 per class, seeded). ``on_bad``: ``skip`` reports bad files and goes on, ``stop``
    raises :class:`DataError` naming the file. ``workers``: decoding processes (0 or 1 = in
    this process). ``chunk``: images per committed unit of work.
    """
    if on_bad not in ("skip", "stop"):
        raise ValueError(f"on_bad must be 'skip' or 'stop', got {on_bad!r}")
    src_p, dst_p = Path(src).expanduser(), Path(dst).expanduser()
    if dst_p.exists() and not dst_p.is_dir():
        raise DataError(f"DST {dst_p} is a file; give a folder for the store")
    classes, items, how = scan(src_p)
    if not items["train"]:
        raise DataError(f"{src_p}: no training files found")
    fingerprint = _fingerprint(items, size)
    dst_p.mkdir(parents=True, exist_ok=True)
    if (dst_p / META).is_file():
        meta = read_state(dst_p / META)
        if meta.get("fingerprint") != fingerprint:
            raise DataError(
                f"{dst_p} already holds a store made from other files or another "
                "size; choose a new DST or delete this one"
            )
        log.info("%s is already prepared", dst_p)
        return _summary(dst_p, meta, resumed=False, already=True)
    writer = StoreWriter(dst_p, items, size, chunk, fingerprint)
    mapper = functools.partial(load_image, size=size)
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        for split in SPLITS:
            _run_split(writer, split, src_p, mapper, pool, on_bad)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    meta = writer.finish(classes, how, str(src_p))
    return _summary(dst_p, meta, resumed=writer.resumed, already=False)


def _run_split(writer, split: str, src: Path, mapper, pool, on_bad: str) -> None:
    todo = writer.chunks_left(split)
    if not todo:
        writer.finish_split(split)
        return
    free = shutil.disk_usage(writer.dst).free
    if free < writer.bytes_left(split):
        raise DataError(
            f"{writer.dst}: {free / 2**30:.1f} GiB free, but the {split} images need "
            f"{writer.bytes_left(split) / 2**30:.1f} GiB more; free space or "
            "choose another DST"
        )
    files = writer.items[split]
    bar = tqdm(
        total=len(files), initial=todo[0][0], desc=f"prepare {split}", unit="img", mininterval=1.0
    )
    with bar:
        for lo, hi in todo:
            paths = [str(src / f) for f, _ in files[lo:hi]]
            results = pool.imap(mapper, paths, chunksize=4) if pool else map(mapper, paths)
            kept, bad = [], []
            for j, (image, reason) in enumerate(results):
                if image is not None:
                    kept.append((image, files[lo + j][1]))
                    continue
                name = files[lo + j][0]
                if on_bad == "stop":
                    raise DataError(
                        f"{src / name}: {reason}; remove or replace the file, or "
                        "rerun with on_bad=skip (--on-bad skip) to skip bad files"
                    )
                log.warning("skipping %s: %s", src / name, reason)
                bad.append({"split": split, "file": name, "reason": reason})
            writer.commit(split, hi, kept, bad)
            bar.update(hi - lo)
    writer.finish_split(split)

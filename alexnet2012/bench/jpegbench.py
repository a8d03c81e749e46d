"""The JPEG store measured: bytes per image and pixel error by quality, on photographs given.

    python -m alexnet2012.bench.jpegbench PHOTO... [--qualities 75 85 90 95] [--tree DIR]

Each photograph gives the 256x256 squares ``prepare`` would store: its centre square with the
shorter side at 256 (ref §3), and the 256 windows, 128 apart, of the same photograph scaled to
shorter sides 384 and 512 (ILSVRC's objects at several scales). Each quality's row: kilobytes per
image (mean, max), the training set of ILSVRC-2012 (1,281,167 images) projected from the mean,
the decoded pixels' mean and max absolute difference from the squares (0-255 levels), and the
host's decode rate per core (``torchvision.io.decode_jpeg``, one thread). ``--tree DIR`` also
writes the squares as lossless PNGs in ``DIR/train/<photo>/`` and ``DIR/val/<photo>/``, an
image tree to ``prepare`` for :mod:`.loadbench` (``--copies`` times each).

:func:`delivered`: training batches per second that a store delivers to a device, as training
takes them (crops, flips, mean image, colour noise); :mod:`.loadbench` reports it on a GPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexnet2012.data.decode import square
from alexnet2012.data.jpegstore import decode_host, encode
from alexnet2012.files import print_json

ILSVRC_TRAIN = 1_281_167  # images in ILSVRC-2012's training set
PASSES = 5  # timed decodes of each image


def squares(photo: Path, size: int = 256) -> list[np.ndarray]:
    """The ``size`` squares of one photograph (see the module doc)."""
    rgb = np.array(Image.open(photo).convert("RGB"))
    out = []
    for side in (size, 3 * size // 2, 2 * size):
        if side > min(rgb.shape[:2]):
            continue
        big = square(rgb, side)
        for top in range(0, side - size + 1, size // 2):
            for left in range(0, side - size + 1, size // 2):
                out.append(np.ascontiguousarray(big[top : top + size, left : left + size]))
    return out


def quality_row(images: list[np.ndarray], quality: int) -> dict:
    blobs = [encode(im, quality) for im in images]
    torch.set_num_threads(1)
    decoded = [decode_host(b) for b in blobs]  # also warms the decoder up
    cpu = time.process_time()
    for _ in range(PASSES):
        for b in blobs:
            decode_host(b)
    cpu = time.process_time() - cpu
    err = [
        np.abs(d.astype(np.int16) - im.astype(np.int16))
        for d, im in zip(decoded, images, strict=True)
    ]
    n = np.array([len(b) for b in blobs])
    return {
        "quality": quality,
        "kb_per_image": n.mean() / 1e3,
        "kb_max": n.max() / 1e3,
        "ilsvrc_train_gb": n.mean() * ILSVRC_TRAIN / 1e9,
        "mean_abs_error": float(np.mean([e.mean() for e in err])),
        "max_abs_error": int(max(e.max() for e in err)),
        "decode_img_per_cpu_s": PASSES * len(blobs) / max(cpu, 1e-9),
    }


def write_tree(root: Path, photos: list[Path], copies: int) -> int:
    """Each photograph's squares as PNGs, ``copies`` times, every 5th copy in val/."""
    count = 0
    for photo in photos:
        for k, im in enumerate(squares(photo)):
            for c in range(copies):
                split = "val" if c % 5 == 4 else "train"
                path = root / split / photo.stem / f"{k:03d}-{c:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(im).save(path)
                count += 1
    return count


def delivered(store: str, size: int, batch: int, batches: int, workers: int, device) -> float:
    """Training images/s a store delivers on ``device`` with ``workers`` loader threads."""
    from alexnet2012.config import Config
    from alexnet2012.data import build_data

    cfg = Config()
    cfg.data.name, cfg.data.root, cfg.data.workers = "imagefolder", store, workers
    cfg.model.preset = "original"
    data = build_data(cfg, size, device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    epochs = -(-batches * batch // max(1, data.train_size - batch)) + 1
    stream = (b for e in range(epochs) for b in data.train_batches(e, batch, 0))
    next(stream)  # warm up: threads, decoder, allocator
    sync()
    t, n = time.perf_counter(), 0
    for _, (x, _y) in zip(range(batches), stream, strict=False):
        n += len(x)
    sync()
    return n / (time.perf_counter() - t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("photos", nargs="+", type=Path)
    p.add_argument("--qualities", type=int, nargs="+", default=[75, 80, 85, 90, 92, 95])
    p.add_argument("--tree", type=Path, help="also write the squares here as an image tree")
    p.add_argument("--copies", type=int, default=10, help="copies of each square in --tree")
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args(argv)
    images = [im for photo in args.photos for im in squares(photo)]
    out = {
        "photos": [str(p) for p in args.photos],
        "squares": len(images),
        "subsampling": "4:4:4",
        "rows": [quality_row(images, q) for q in args.qualities],
    }
    if args.tree:
        out["tree"] = {
            "root": str(args.tree),
            "images": write_tree(args.tree, args.photos, args.copies),
        }
    print_json(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How fast ``prepare`` is on ImageNet-sized JPEGs, made here (never downloaded).

    python -m alexnet2012.bench.prepbench --images 3000 --dir /tmp/prepbench --workers 1 2

writes a synthetic ImageFolder tree whose sizes follow ILSVRC-2012's (mostly 500 on the long
side, a tail of small and large photos; mean about 400x350; quality 90), then times (wall
clock, and CPU time: images per CPU-second is the per-core rate even on a busy machine)
decoding to the stored 256x256 square several ways (PIL plain or in draft mode,
``torchvision.io.decode_jpeg`` if torchvision is installed; PIL's or torch's resize), the whole
``prepare`` per worker count, the parent's cost per image (the ceiling at any core count), and
indexing a tar of per-synset tars; and projects hours for all of ILSVRC-2012.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet2012.data.decode import decode, square
from alexnet2012.data.prepare import prepare_main

ILSVRC_IMAGES = 1_281_167 + 50_000  # train + val


def imagenet_size(rng: np.random.Generator) -> tuple[int, int]:
    """A (width, height) drawn like ILSVRC-2012's: 500 long side mostly, some small, some big."""
    kind = rng.choice(3, p=[0.50, 0.42, 0.08])
    long = (500, int(rng.integers(100, 450)), int(rng.integers(600, 1200)))[kind]
    short = int(long * rng.choice([0.75, 0.667, 0.8, 1.0, 0.5625], p=[0.5, 0.2, 0.1, 0.1, 0.1]))
    return (long, short) if rng.random() < 0.75 else (short, long)


def photo(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Smooth shapes plus texture and sensor noise: JPEG sizes near real photos' (~0.6 B/px)."""
    w, h = size
    coarse = rng.integers(0, 256, (max(2, h // 40), max(2, w // 40), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), np.float32)
    fine = rng.integers(0, 256, (max(2, h // 4), max(2, w // 4), 3), dtype=np.uint8)
    img += 0.4 * np.asarray(Image.fromarray(fine).resize((w, h), Image.Resampling.BILINEAR))
    img += rng.normal(0, 14, img.shape)
    return Image.fromarray(np.clip(img * 0.8, 0, 255).astype(np.uint8))


def make_jpegs(root: Path, n: int, classes: int = 10, seed: int = 0) -> dict:
    """``n`` synthetic JPEGs in ``root/train/c<k>/`` (quality 90); their size statistics."""
    rng = np.random.default_rng(seed)
    sizes, nbytes = [], 0
    for i in range(n):
        size = imagenet_size(rng)
        path = root / "train" / f"c{i % classes:02d}" / f"img{i:06d}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(size, rng).save(path, "JPEG", quality=90)
        sizes.append(size)
        nbytes += path.stat().st_size
    w, h = np.array(sizes).mean(0)
    return {"images": n, "mean_w": round(w), "mean_h": round(h), "mean_kb": nbytes / n / 1e3}


def _pil_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """The resize ``prepare`` used before torch's: PIL BILINEAR, then the centre crop."""
    img, (h, w) = Image.fromarray(rgb), rgb.shape[:2]
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


def time_decoders(blobs: list[bytes], size: int) -> dict:
    """Images/s on one core, bytes in memory to the stored square, for each decode + resize."""
    import torch

    from alexnet2012.data.decode import jpeg_decoder

    torch.set_num_threads(1)
    ways = {
        "pil_plain+pil_resize": lambda b: _pil_square(decode(b, size, False, False)[0], size),
        "pil_draft+pil_resize": lambda b: _pil_square(decode(b, size, True, False)[0], size),
        "pil_draft+torch_resize": lambda b: square(decode(b, size, True, False)[0], size),
        "prepare: draft_or_decode_jpeg+torch_resize": lambda b: square(decode(b, size)[0], size),
    }
    if jpeg_decoder() is not None:
        ways["decode_jpeg_all+torch_resize"] = lambda b: square(jpeg_decoder()(b), size)
    out = {}
    for name, fn in ways.items():
        fn(blobs[0])  # warm up
        t, cpu = time.perf_counter(), time.process_time()
        for b in blobs:
            fn(b)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        out[name] = {"img_s": len(blobs) / wall, "img_per_cpu_s": len(blobs) / cpu}
    return out


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the pool's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def time_prepare(root: Path, work: Path, workers: int, size: int) -> dict:
    """The whole ``prepare`` (read, decode, write, statistics) with ``workers``: images per
    second of wall time and per CPU-second (all processes: the per-core rate under load)."""
    dst = work / f"store-{workers}"
    shutil.rmtree(dst, ignore_errors=True)
    t, cpu = time.perf_counter(), _cpu_seconds()
    s = prepare_main(str(root), str(dst), size=size, workers=workers)
    wall, cpu = time.perf_counter() - t, _cpu_seconds() - cpu
    shutil.rmtree(dst)
    return {"img_s": s["files"] / wall, "img_per_cpu_s": s["files"] / cpu}


def time_moments(size: int, n: int = 256) -> float:
    """CPU-seconds per image for the exact RGB second moments a worker computes (PCA's share)."""
    from alexnet2012.data.writer import second_moments

    images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    t = time.process_time()
    for im in images:
        second_moments(im)
    return (time.process_time() - t) / n


def time_main_process(work: Path, size: int, n: int = 1024) -> list[tuple[float, float]]:
    """CPU-seconds and wall seconds per image the parent spends on a result: write (to the
    disk of ``work``), statistics, bookkeeping. It does this for every image, so ``1 / this``
    caps ``prepare`` at any core count; the wall time includes waiting for the disk.

    Two passes: in a VM the first touch of fresh memory (page cache included) is slow; the
    second pass reuses the first one's freed pages, as a long run does once RAM is cycled.
    """
    from alexnet2012.data.writer import StoreWriter, second_moments

    rng = np.random.default_rng(0)
    slots = rng.integers(0, 256, (256, size, size, 3), dtype=np.uint8)  # as the shared slots
    moments = [second_moments(im) for im in slots]
    items = {"train": [(f"{i}", 0, "") for i in range(n)], "val": []}
    out = []
    for _ in range(2):
        dst = work / "commit"
        dst.mkdir(parents=True)
        writer = StoreWriter(dst, items, size, 256, "bench")
        cpu, wall = time.process_time(), time.perf_counter()
        for lo in range(0, n, 256):
            kept = [(slots[i], 0) for i in range(256)]
            writer.commit("train", lo + 256, kept, [], {}, moments)
        out.append(((time.process_time() - cpu) / n, (time.perf_counter() - wall) / n))
        writer.close()
        shutil.rmtree(dst)
    return out


def time_tar_index(work: Path, synsets: int = 20, per: int = 500) -> float:
    """Seconds per member to index a tar of per-synset tars (headers only)."""
    from alexnet2012.data.ilsvrc import index_train_tar

    path = work / "ILSVRC2012_img_train.tar"
    with tarfile.open(path, "w") as outer:
        for s in range(synsets):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as inner:
                for k in range(per):
                    info = tarfile.TarInfo(f"n{s:08d}_{k}.JPEG")
                    info.size = 3000
                    inner.addfile(info, io.BytesIO(bytes(3000)))
            info = tarfile.TarInfo(f"n{s:08d}.tar")
            info.size = buf.tell()
            buf.seek(0)
            outer.addfile(info, buf)
    t = time.perf_counter()
    index_train_tar(path, path.name)
    seconds = (time.perf_counter() - t) / (synsets * per)
    path.unlink()
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--dir", default="/tmp/alexnet2012-prepbench")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--workers", type=int, nargs="*", default=[1])
    args = p.parse_args(argv)
    work = Path(args.dir)
    root = work / "jpegs"
    if not root.is_dir():
        made = make_jpegs(root, args.images)
        (work / "jpegs.json").write_text(json.dumps(made))
    made = json.loads((work / "jpegs.json").read_text())
    paths = sorted(root.rglob("*.JPEG"))
    blobs = [p.read_bytes() for p in paths[:1000]]
    out = {"set": made, "one_core_img_s": time_decoders(blobs, args.size)}
    out["prepare_img_s"] = {w: time_prepare(root, work, w, args.size) for w in args.workers}
    per_core = out["prepare_img_s"][args.workers[0]]["img_per_cpu_s"]
    out["tar_index_us_per_member"] = 1e6 * time_tar_index(work)
    out["worker_moments_ms_per_image"] = 1e3 * time_moments(args.size)
    (cold, cold_wall), (main_s, main_wall) = time_main_process(work, args.size)
    out["parent_cpu_ms_per_image"] = {"first_touch": 1e3 * cold, "warm": 1e3 * main_s}
    out["parent_ceiling_img_s"] = {"first_touch": 1 / cold, "warm": 1 / main_s}
    out["parent_wall_ms_per_image_with_disk"] = {
        "first_touch": 1e3 * cold_wall,
        "warm": 1e3 * main_wall,
    }
    out["disk_write_mb_s_warm"] = args.size**2 * 3 / main_wall / 1e6
    out["projected_hours"] = {  # N cores at the per-CPU-second rate, capped by the parent's CPU
        n: ILSVRC_IMAGES / min(per_core * n, 1 / main_s) / 3600 for n in (8, 16, 32)
    }  # and by the disks: 196 KB written and ~110 KB read per image
    out["cpu_count"], out["load_avg"] = os.cpu_count(), os.getloadavg()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Small image sets for the data tests, made here, never downloaded: JPEG trees with the awkward
files a real ImageNet copy holds (CMYK, greyscale, truncated, empty, not an image), and a tiny
ILSVRC-2012 in each layout users have: the three official archives, their extracted layout,
Kaggle's CLS-LOC, and the equivalent ImageFolder tree."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg(path: Path, size, colour, mode="RGB", quality=90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    img.paste((255 - colour[0], colour[1] // 2, 255), (0, 0, size[0] // 3, size[1] // 2))
    img.convert(mode).save(path, "JPEG", quality=quality)
    return path


def make_tree(src: Path) -> Path:
    """train/ and val/ trees, 3 classes, with every kind of awkward file."""
    colours = {"ant": (200, 30, 30), "bee": (30, 200, 30), "cat": (30, 30, 200)}
    for split, n in (("train", 4), ("val", 2)):
        for c, colour in colours.items():
            for i in range(n):
                jpeg(src / split / c / f"{c}{i}.JPEG", (40 + 7 * i, 34 + 3 * i), colour)
    jpeg(src / "train/ant/cmyk.JPEG", (50, 36), (255, 0, 0), mode="CMYK")
    jpeg(src / "train/bee/grey.JPEG", (36, 48), (90, 90, 90), mode="L")
    full = jpeg(src / "train/cat/truncated.JPEG", (64, 64), (1, 2, 3)).read_bytes()
    (src / "train/cat/truncated.JPEG").write_bytes(full[: len(full) // 2])
    (src / "train/cat/notes.txt").write_text("not an image")
    (src / "val/bee/empty.JPEG").write_bytes(b"")
    return src


# ILSVRC-2012 in miniature: four leaf synsets (ILSVRC2012_IDs deliberately not in WNID order) and
# one parent, as the devkit's meta.mat lists them (the real one: 1,000 leaves with IDs 1..1000).
SYNSETS = [  # (ILSVRC2012_ID, WNID, words, children)
    (1, "n02119789", "kit fox, Vulpes macrotis", []),
    (2, "n02100735", "English setter", []),
    (3, "n01440764", "tench, Tinca tinca", []),
    (4, "n01443537", "goldfish, Carassius auratus", []),
    (5, "n02512053", "fish", [3, 4]),
]
LEAVES = sorted(w for _, w, _, c in SYNSETS if not c)  # class order: sorted WNIDs
MAT_FIELDS = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
              "wordnet_height", "num_train_images")  # fmt: skip


def encoded(size, colour, mode="RGB", fmt="JPEG", orientation=0) -> bytes:
    img = Image.new("RGB", size, colour)
    img.paste((255 - colour[0], colour[1] // 2, 255), (0, 0, size[0] // 2, size[1]))  # left half
    buf, extra = io.BytesIO(), {"quality": 90} if fmt == "JPEG" else {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation  # EXIF orientation tag
        extra["exif"] = exif
    img.convert(mode).save(buf, fmt, **extra)
    return buf.getvalue()


def ilsvrc_images() -> dict:
    """{"train": {wnid: {file: bytes}}, "val": [(file, wnid, bytes)]} with the oddities of the
    real set: CMYK, greyscale, a PNG named .JPEG, a truncated file, an EXIF-rotated photo."""
    train = {}
    for s, wnid in enumerate(LEAVES):
        files = {
            f"{wnid}_{k}.JPEG": encoded((40 + 9 * k, 34 + 5 * s), (60 * s, 40 * k, 120))
            for k in range(3)
        }
        train[wnid] = files
    train[LEAVES[0]][f"{LEAVES[0]}_cmyk.JPEG"] = encoded((50, 36), (255, 0, 0), mode="CMYK")
    train[LEAVES[1]][f"{LEAVES[1]}_grey.JPEG"] = encoded((36, 48), (90, 90, 90), mode="L")
    train[LEAVES[2]][f"{LEAVES[2]}_png.JPEG"] = encoded((44, 40), (10, 200, 10), fmt="PNG")
    train[LEAVES[3]][f"{LEAVES[3]}_exif.JPEG"] = encoded((60, 40), (0, 0, 255), orientation=6)
    whole = encoded((64, 64), (1, 2, 3))
    train[LEAVES[3]][f"{LEAVES[3]}_truncated.JPEG"] = whole[: len(whole) // 2]
    by_id = {w: i for i, w, _, c in SYNSETS if not c}
    order = [LEAVES[k % 4] for k in (3, 0, 2, 1, 1, 3, 0, 2)]  # val 1..8, classes interleaved
    val = [
        (f"ILSVRC2012_val_{n:08d}.JPEG", w, encoded((48, 40 + n), (30 * n, 100, by_id[w] * 50)))
        for n, w in enumerate(order, 1)
    ]
    return {"train": train, "val": val}


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_image_folder(root: Path, images: dict) -> Path:
    for wnid, files in images["train"].items():
        for name, data in files.items():
            _write(root / "train" / wnid / name, data)
    for name, wnid, data in images["val"]:
        _write(root / "val" / wnid / name, data)
    return root


def tar_bytes(members: dict, gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_340_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def meta_mat(synsets=SYNSETS) -> bytes:
    """``meta.mat`` as the devkit has it: a struct array ``synsets`` (N x 1) with these fields."""
    import scipy.io

    table = np.zeros((len(synsets), 1), dtype=[(f, object) for f in MAT_FIELDS])
    for k, (i, wnid, words, children) in enumerate(synsets):
        table[k, 0] = (
            np.array([[i]], np.uint16), wnid, words, f"gloss of {words}",
            np.array([[len(children)]], np.uint8), np.array([children], np.uint16).reshape(1, -1),
            np.array([[1 if children else 0]], np.uint8), np.array([[1300]], np.uint16),
        )  # fmt: skip
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": table})
    return buf.getvalue()


def devkit_files(images: dict, drop: int = 0) -> dict:
    """Devkit members; ``drop`` leaves that many ground-truth lines out."""
    by_wnid = {w: i for i, w, _, c in SYNSETS if not c}
    truth = "".join(f"{by_wnid[w]}\n" for _, w, _ in images["val"][: len(images["val"]) - drop])
    return {
        "ILSVRC2012_devkit_t12/COPYING": b"devkit",
        "ILSVRC2012_devkit_t12/data/meta.mat": meta_mat(),
        "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": truth.encode(),
    }


def write_archives(root: Path, images: dict, devkit: bool = True, drop: int = 0) -> Path:
    """The three files as downloaded from image-net.org."""
    inner = {f"{w}.tar": tar_bytes(files) for w, files in images["train"].items()}
    _write(root / "ILSVRC2012_img_train.tar", tar_bytes(inner))
    _write(root / "ILSVRC2012_img_val.tar", tar_bytes({n: d for n, _, d in images["val"]}))
    if devkit:
        _write(root / "ILSVRC2012_devkit_t12.tar.gz", tar_bytes(devkit_files(images, drop), True))
    return root


def write_extracted(root: Path, images: dict, train_tars: bool) -> Path:
    """The archives extracted: train/ (per-synset tars, or their folders), flat val/, devkit/."""
    for wnid, files in images["train"].items():
        if train_tars:
            _write(root / "train" / f"{wnid}.tar", tar_bytes(files))
            continue
        for name, data in files.items():
            _write(root / "train" / wnid / name, data)
    for name, _, data in images["val"]:
        _write(root / "val" / name, data)
    for name, data in devkit_files(images).items():
        _write(root / name, data)
    return root


def write_cls_loc(root: Path, images: dict) -> Path:
    """Kaggle's re-packaging: ILSVRC/Data/CLS-LOC/{train,val} and the two label files."""
    data = root / "ILSVRC/Data/CLS-LOC"
    for wnid, files in images["train"].items():
        for name, blob in files.items():
            _write(data / "train" / wnid / name, blob)
    rows = ["ImageId,PredictionString"]
    for name, wnid, blob in images["val"]:
        _write(data / "val" / name, blob)
        rows.append(f"{name.removesuffix('.JPEG')},{wnid} 1 2 30 31 {wnid} 3 4 20 21 ")
    _write(root / "LOC_val_solution.csv", ("\n".join(rows) + "\n").encode())
    words = {w: text for _, w, text, c in SYNSETS if not c}
    mapping = "".join(f"{w} {words[w]}\n" for w in LEAVES)
    _write(root / "LOC_synset_mapping.txt", mapping.encode())
    return root

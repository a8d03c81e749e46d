"""Which layout ``prepare`` was given, and the (name, label, location) of every image in it.

SRC is one of (checked in this order):

1. **ILSVRC-2012 archives**: a folder holding ``ILSVRC2012_img_train.tar``, and for validation
   ``ILSVRC2012_img_val.tar`` with ``ILSVRC2012_devkit_t12.tar.gz`` (as torchvision's ImageNet
   root). Read in place, nothing extracted. A path to one of the three files means its folder.
2. **Kaggle CLS-LOC**: a folder holding ``ILSVRC/Data/CLS-LOC/{train,val}``,
   ``LOC_synset_mapping.txt`` and ``LOC_val_solution.csv`` (or SRC is the ``CLS-LOC`` folder).
3. **ILSVRC-2012 extracted**: ``train/`` (``nXXXXXXXX.tar`` files or ``nXXXXXXXX/`` folders),
   ``val/`` with the flat ``ILSVRC2012_val_*.JPEG`` files, and the devkit (archive or folder).
4. **ImageFolder**: ``train/`` and ``val/`` trees of class folders, or one tree (split 90/10).

Classes are indexed in sorted order of their names (WNIDs for ImageNet: the order of Caffe's
and torchvision's pretrained weights). Within a split, images are ordered by (label, name), so
every layout of the same images yields the same store.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import alexnet2012.data.ilsvrc as ilsvrc
from alexnet2012.data.errors import DataError

log = logging.getLogger(__name__)

VAL_FRACTION = 0.1  # one tree: 90/10 train/val split per class
SPLIT_SEED = 0
CLS_LOC = Path("ILSVRC/Data/CLS-LOC")


@dataclass
class Listing:
    layout: str  # which layout SRC is, in words
    classes: list[str]  # sorted; the label is the index
    names: list[str]  # human-readable name of each class (the class itself if none known)
    items: dict[str, list[tuple]]  # split -> [(name relative to SRC, label, location)]
    how: str  # how train and val were made


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
            "(train/<class>/*.JPEG); ImageNet's flat val/ folder needs the devkit "
            f"({ilsvrc.DEVKIT}) beside it"
        )
    return names


def _entries(src: Path, files: list[str], label: int) -> list[tuple]:
    return [(f, label, str(src / f)) for f in files]


def split_90_10(per_class: list[list[tuple]]) -> dict[str, list[tuple]]:
    """One tree's files, split 90/10 into train and val per class (seeded)."""
    items = {"train": [], "val": []}
    for i, files in enumerate(per_class):
        rng = np.random.default_rng([SPLIT_SEED, i])  # deterministic per class
        n_val = int(round(VAL_FRACTION * len(files))) if len(files) > 1 else 0
        val = set(rng.permutation(len(files))[:n_val].tolist())
        for j, entry in enumerate(files):
            items["val" if j in val else "train"].append(entry)
    return items


def image_folder(src: Path) -> Listing:
    """``train/`` and ``val/`` trees of class folders, ``train/`` alone, or one tree."""
    train_dir = src / "train"
    tree = train_dir if train_dir.is_dir() else src
    classes = _class_dirs(tree)
    per_class = [_entries(src, _files(tree / c, src), i) for i, c in enumerate(classes)]
    if train_dir.is_dir() and (src / "val").is_dir():
        val_classes = _class_dirs(src / "val")
        unknown = sorted(set(val_classes) - set(classes))
        if unknown:
            raise DataError(
                f"{src / 'val' / unknown[0]}: class folder {unknown[0]!r} is not "
                f"in {train_dir}; val/ and train/ need the same class names"
            )
        index = {c: i for i, c in enumerate(classes)}
        val = [
            e for c in val_classes for e in _entries(src, _files(src / "val" / c, src), index[c])
        ]
        items = {"train": [e for files in per_class for e in files], "val": val}
        return Listing("ImageFolder", classes, classes, items, "given: train/ and val/")
    where = "train/" if train_dir.is_dir() else "one tree"
    how = f"split: {where} 90/10 into train and val (seeded, per class)"
    return Listing("ImageFolder", classes, classes, split_90_10(per_class), how)


def _train_synsets(src: Path) -> tuple[dict[str, list], str]:
    """WNID -> [(name, location)] from the train tar, a folder of tars, or class folders."""
    if (src / ilsvrc.TRAIN_TAR).is_file():
        tar = src / ilsvrc.TRAIN_TAR
        return ilsvrc.index_train_tar(tar, ilsvrc.TRAIN_TAR), f"{ilsvrc.TRAIN_TAR} (tar of tars)"
    train = src / "train"
    if not train.is_dir():
        raise DataError(f"{src}: no {ilsvrc.TRAIN_TAR} and no train/ folder; nothing to train on")
    if any(train.glob("n*.tar")) and not any(p.is_dir() for p in train.iterdir()):
        return ilsvrc.index_tar_dir(train, "train"), "train/nXXXXXXXX.tar"
    synsets = {c: [(f, str(src / f)) for f in _files(train / c, src)] for c in _class_dirs(train)}
    return synsets, "train/nXXXXXXXX/"


def _val_numbered(src: Path) -> tuple[list[tuple], str] | None:
    """[(number, name, location)] of the validation images, and where they are; or None."""
    if (src / ilsvrc.VAL_TAR).is_file():
        return ilsvrc.index_val_tar(src / ilsvrc.VAL_TAR, ilsvrc.VAL_TAR), ilsvrc.VAL_TAR
    val = src / "val"
    if not val.is_dir():
        return None
    files = _files(val, src)
    return [(ilsvrc.val_number(f, val), f, str(src / f)) for f in files], "val/ (flat)"


def _check_known(classes: list[str], wnids, where) -> None:
    unknown = sorted(set(wnids) - set(classes))
    if unknown:
        raise DataError(f"{where}: synset {unknown[0]} is not among the {len(classes)} classes")


def _items(classes: list[str], synsets: dict, val: list[tuple], wnids: list[str]) -> dict:
    """Both splits as (name, label, location), each ordered by (label, name)."""
    index = {c: i for i, c in enumerate(classes)}
    train = [(n, i, loc) for i, c in enumerate(classes) for n, loc in synsets.get(c, [])]
    val = [(name, index[w], loc) for (_, name, loc), w in zip(val, wnids, strict=True)]
    return {"train": train, "val": sorted(val, key=lambda e: (e[1], e[0]))}


def official(src: Path) -> Listing:
    """The three official files, or their extracted layout; val labels from the devkit."""
    synsets, train_from = _train_synsets(src)
    val = _val_numbered(src)
    labels = ilsvrc.read_devkit(src)
    if val is not None and labels is None:
        raise DataError(
            f"{src}: validation images ({val[1]}) but no devkit to label them; put "
            f"{ilsvrc.DEVKIT} (from image-net.org) in {src}"
        )
    classes = sorted(labels.words) if labels else sorted(synsets)
    _check_known(classes, synsets, f"{src}: {train_from}")
    names = [labels.words[c] for c in classes] if labels else classes
    kind = "archives" if (src / ilsvrc.TRAIN_TAR).is_file() else "extracted"
    layout = f"ILSVRC-2012 {kind}: train from {train_from}"
    if val is None:
        how = "split: train 90/10 into train and val (seeded, per class)"
        per_class = [[(n, i, loc) for n, loc in synsets.get(c, [])] for i, c in enumerate(classes)]
        return Listing(layout, classes, names, split_90_10(per_class), how)
    wnids = ilsvrc.val_labels([v[0] for v in val[0]], labels, val[1])
    layout += f", val from {val[1]} labelled by {Path(labels.source).name}"
    items = _items(classes, synsets, val[0], wnids)
    return Listing(layout, classes, names, items, "given: train and val")


def cls_loc(root: Path, data: Path) -> Listing:
    """Kaggle's CLS-LOC: class folders for train, flat val labelled by the CSV."""
    files = {n: root / n for n in ("LOC_synset_mapping.txt", "LOC_val_solution.csv")}
    files["train/"] = data / "train"
    missing = [n for n, p in files.items() if not p.exists()]
    if missing:
        raise DataError(f"{root}: {data} but no {missing[0]}; it comes with the CLS-LOC download")
    words = ilsvrc.read_loc_mapping(files["LOC_synset_mapping.txt"])
    solution = ilsvrc.read_loc_solution(files["LOC_val_solution.csv"])
    classes = sorted(words)
    train = data / "train"
    synsets = {c: [(f, str(root / f)) for f in _files(train / c, root)] for c in _class_dirs(train)}
    _check_known(classes, synsets, train)
    val_files = _files(data / "val", root) if (data / "val").is_dir() else []
    ids = [Path(f).stem for f in val_files]
    unlabelled = [i for i in ids if i not in solution]
    if unlabelled:
        raise DataError(f"{files['LOC_val_solution.csv']}: no label for {unlabelled[0]}")
    wnids = [solution[i] for i in ids]
    _check_known(classes, wnids, files["LOC_val_solution.csv"])
    val = [(0, f, str(root / f)) for f in val_files]
    items = _items(classes, synsets, val, wnids)
    names = [words[c] for c in classes]
    return Listing("Kaggle ILSVRC CLS-LOC", classes, names, items, "given: train and val")


def _cls_loc_root(src: Path) -> Path | None:
    if (src / CLS_LOC).is_dir():
        return src
    if src.parts[-3:] == CLS_LOC.parts:
        return src.parents[2]
    return None


def detect(src: Path) -> Listing:
    """The layout of ``src`` and its images (see the module docstring for the order)."""
    if src.is_file() and src.name in ilsvrc.OFFICIAL:
        src = src.parent  # one of the three files: the folder that holds them
    if not src.is_dir():
        what = "is a file" if src.exists() else "no such folder"
        raise DataError(
            f"{src}: {what}; SRC is a folder holding {', '.join(ilsvrc.OFFICIAL)}, "
            "the CLS-LOC download, or train/ and val/ ImageFolder trees"
        )
    if (src / ilsvrc.TRAIN_TAR).exists() or (src / ilsvrc.VAL_TAR).exists():
        listing = official(src)
    elif (root := _cls_loc_root(src)) is not None:
        listing = cls_loc(root, root / CLS_LOC)
    elif _flat_val(src / "val") or any((src / "train").glob("n*.tar")):
        listing = official(src)
    else:
        listing = image_folder(src)
    log.info("%s: %s; %s", src, listing.layout, listing.how)
    return listing


def _flat_val(val: Path) -> bool:
    """True for a ``val/`` of ILSVRC-named files (not class folders)."""
    return val.is_dir() and any(ilsvrc.VAL_NAME.fullmatch(p.name) for p in val.iterdir())

"""ILSVRC-2012 as distributed, read in place: tar indexes, the devkit's labels, CLS-LOC's labels.

Nothing is extracted. An uncompressed tar is indexed once (headers only) into members'
``(archive, offset, length)``, which :mod:`alexnet2012.data.decode` reads with ``os.pread``:

- ``ILSVRC2012_img_train.tar``: one ``nXXXXXXXX.tar`` per synset, each a flat tar of JPEGs;
- ``ILSVRC2012_img_val.tar``: ``ILSVRC2012_val_00000001.JPEG`` ... in one flat tar;
- ``ILSVRC2012_devkit_t12.tar.gz`` (or its extracted folder): ``data/meta.mat`` (synsets; the
  1000 leaves have ``num_children`` 0 and ``ILSVRC2012_ID`` 1..1000) and
  ``data/ILSVRC2012_validation_ground_truth.txt`` (one ID per val image, in file-name order);
- Kaggle's CLS-LOC: ``LOC_synset_mapping.txt`` (``nXXXXXXXX words``) and ``LOC_val_solution.csv``
  (``ImageId,PredictionString``; the first token of the string is the WNID).

``meta.mat`` needs scipy (``pip install scipy``), imported only when one is read.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from alexnet2012.data.errors import DataError

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
META_MAT = "data/meta.mat"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
WNID = re.compile(r"n\d{8}")
VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")
OFFICIAL = (TRAIN_TAR, VAL_TAR, DEVKIT)


@dataclass
class Labels:
    """The 1000 leaf synsets and the validation ground truth of a devkit."""

    wnid_of: dict[int, str]  # ILSVRC2012_ID -> WNID
    words: dict[str, str]  # WNID -> human-readable name ("tench, Tinca tinca")
    ground_truth: list[int]  # ILSVRC2012_ID of val image 1, 2, ...
    source: str  # the devkit archive or folder


def _damaged(path, e: Exception) -> DataError:
    return DataError(f"{path}: a truncated or damaged tar ({e}); download it again")


def _members(tar: tarfile.TarFile, path):
    """Regular-file members, in archive order; DataError naming ``path`` if the tar is broken."""
    try:
        for m in tar:
            if m.isreg():
                yield m
    except (tarfile.TarError, EOFError, OSError) as e:
        raise _damaged(path, e) from None


def _open_tar(path: Path, fileobj=None) -> tarfile.TarFile:
    try:
        return tarfile.open(path if fileobj is None else None, "r:", fileobj=fileobj)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(
            f"{path}: not a readable tar, or truncated or damaged ({e}); download it again"
        ) from None


def index_train_tar(path: Path, prefix: str) -> dict[str, list[tuple[str, tuple]]]:
    """WNID -> sorted [(name, (archive, offset, length))] of a tar of per-synset tars."""
    out = {}
    bar = functools.partial(tqdm, desc=f"index {path.name}", unit="synset", mininterval=1.0)
    with _open_tar(path) as outer, bar() as bar:
        for m in _members(outer, path):
            wnid = m.name.removesuffix(".tar")
            if not m.name.endswith(".tar") or not WNID.fullmatch(wnid):
                raise DataError(
                    f"{path}: member {m.name!r} is not a per-synset tar (nXXXXXXXX.tar); "
                    f"{TRAIN_TAR} holds one tar of JPEGs per synset"
                )
            where = f"{path}/{m.name}"
            inner = _open_tar(Path(where), fileobj=outer.extractfile(m))
            start = m.offset_data  # inner offsets count from the start of the inner tar
            out[wnid] = sorted(
                (f"{prefix}/{m.name}/{im.name}", (str(path), start + im.offset_data, im.size))
                for im in _members(inner, where)
            )
            bar.update()
    return out


def index_tar_dir(folder: Path, prefix: str) -> dict[str, list[tuple[str, tuple]]]:
    """The same for a folder of per-synset tars (``ILSVRC2012_img_train.tar`` extracted once)."""
    out = {}
    for tar in sorted(folder.glob("*.tar")):
        if not WNID.fullmatch(tar.stem):
            raise DataError(f"{tar}: not a per-synset tar (nXXXXXXXX.tar)")
        with _open_tar(tar) as t:
            out[tar.stem] = sorted(
                (f"{prefix}/{tar.name}/{m.name}", (str(tar), m.offset_data, m.size))
                for m in _members(t, tar)
            )
    return out


def val_number(name: str, where) -> int:
    """1 for ``ILSVRC2012_val_00000001.JPEG``; DataError for other names."""
    match = VAL_NAME.fullmatch(name.rsplit("/", 1)[-1])
    if not match:
        raise DataError(
            f"{where}: {name!r} is not an ILSVRC-2012 validation image "
            "(ILSVRC2012_val_NNNNNNNN.JPEG)"
        )
    return int(match[1])


def index_val_tar(path: Path, prefix: str) -> list[tuple[int, str, tuple]]:
    """[(number, name, (archive, offset, length))] of the flat validation tar."""
    with _open_tar(path) as tar:
        return [
            (val_number(m.name, path), f"{prefix}/{m.name}", (str(path), m.offset_data, m.size))
            for m in _members(tar, path)
        ]


def _devkit_files(src: Path) -> tuple[bytes, bytes, str] | None:
    """(meta.mat, ground truth, where) from the devkit archive or folder in ``src``; or None."""
    folder = src / DEVKIT_DIR
    if (folder / META_MAT).is_file() and (folder / GROUND_TRUTH).is_file():
        return (folder / META_MAT).read_bytes(), (folder / GROUND_TRUTH).read_bytes(), str(folder)
    if not (src / DEVKIT).is_file():
        return None
    found = {}
    try:
        with tarfile.open(src / DEVKIT, "r:gz") as tar:
            for m in tar:
                for want in (META_MAT, GROUND_TRUTH):
                    if m.isreg() and m.name.endswith(want):
                        found[want] = tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise _damaged(src / DEVKIT, e) from None
    if len(found) < 2:
        missing = META_MAT if META_MAT not in found else GROUND_TRUTH
        raise DataError(f"{src / DEVKIT}: no {missing} inside; is it the ILSVRC-2012 devkit?")
    return found[META_MAT], found[GROUND_TRUTH], str(src / DEVKIT)


def leaf_synsets(data: bytes, where: str) -> tuple[dict[int, str], dict[str, str]]:
    """ILSVRC2012_ID -> WNID and WNID -> words for the leaf synsets of a ``meta.mat``."""
    try:
        import scipy.io
    except ImportError:
        raise DataError(
            f"{where}: reading meta.mat needs scipy; pip install scipy "
            "(or pip install 'alexnet2012[prepare]')"
        ) from None
    try:
        synsets = np.atleast_1d(scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)["synsets"])
        rows = [
            (int(s["ILSVRC2012_ID"]), str(s["WNID"]), str(s["words"]))
            for s in synsets
            if int(s["num_children"]) == 0
        ]
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise DataError(f"{where}: {META_MAT} is not the devkit's synset table ({e})") from None
    if not rows or len({r[0] for r in rows}) != len(rows):
        raise DataError(f"{where}: {META_MAT} has no leaf synsets, or repeated ILSVRC2012_IDs")
    return {i: w for i, w, _ in rows}, {w: words for _, w, words in rows}


def read_devkit(src: Path) -> Labels | None:
    """The devkit's labels, read without extracting; None if ``src`` holds no devkit."""
    files = _devkit_files(src)
    if files is None:
        return None
    meta, truth, source = files
    wnid_of, words = leaf_synsets(meta, source)
    where = f"{source}: {GROUND_TRUTH}"
    try:
        ids = [int(line) for line in truth.decode().split()]
    except ValueError as e:
        raise DataError(f"{where}: not one ILSVRC2012_ID per line ({e})") from None
    unknown = sorted(set(ids) - set(wnid_of))
    if unknown:
        raise DataError(f"{where}: ID {unknown[0]} is not a leaf synset of {META_MAT}")
    return Labels(wnid_of, words, ids, source)


def val_labels(numbers: list[int], labels: Labels, where) -> list[str]:
    """The WNID of each validation image number; DataError if the counts disagree."""
    n = len(labels.ground_truth)
    if len(numbers) != n or len(set(numbers)) != n or max(numbers, default=0) > n:
        raise DataError(
            f"{labels.source}: {GROUND_TRUTH} has {n} labels, but {where} holds "
            f"{len(numbers)} validation images numbered 1..N; the devkit and the images "
            "must both be ILSVRC-2012's"
        )
    return [labels.wnid_of[labels.ground_truth[k - 1]] for k in numbers]


def read_loc_mapping(path: Path) -> dict[str, str]:
    """WNID -> words from ``LOC_synset_mapping.txt``."""
    words = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        wnid, _, text = line.strip().partition(" ")
        if line.strip() and not WNID.fullmatch(wnid):
            raise DataError(f"{path}:{i}: expected 'nXXXXXXXX words', got {line[:40]!r}")
        if line.strip():
            words[wnid] = text.strip()
    return words


def read_loc_solution(path: Path) -> dict[str, str]:
    """ImageId -> WNID from ``LOC_val_solution.csv`` (the first box's synset)."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                out[row["ImageId"]] = row["PredictionString"].split()[0]
            except (KeyError, IndexError, AttributeError):
                raise DataError(
                    f"{path}: expected columns ImageId,PredictionString with a WNID first"
                ) from None
    return out

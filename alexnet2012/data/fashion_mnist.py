"""Find and load Fashion-MNIST: 60,000 training and 10,000 test images, 28x28 grey, 10 classes.

Where the four IDX files are looked for: only in ``data.root`` when it is set (also its
``FashionMNIST/raw`` subfolder, torchvision's layout), so a wrong path is an error rather than a
silent switch to another copy; otherwise, in order:

1. ``/usr/share/datasets/fashion-mnist`` (Debian: ``apt-get install -y dataset-fashion-mnist``),
2. ``~/.cache/alexnet2012/fashion-mnist``, downloading there with torchvision only when the
   download server can be reached. Processes that share the cache (the local ranks of a job)
   take turns under a file lock: one downloads, the others wait and then find the files.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from alexnet2012.data.errors import DataError
from alexnet2012.data.idx import read_images, read_labels

log = logging.getLogger(__name__)

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_DIR = Path.home() / ".cache" / "alexnet2012" / "fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def find_files(folder: Path) -> dict[str, Path] | None:
    """The four files in ``folder`` (or its torchvision ``FashionMNIST/raw``), else None."""
    for base in (folder, folder / "FashionMNIST" / "raw"):
        found = {}
        for key, name in FILES.items():
            path = next((p for p in (base / name, base / f"{name}.gz") if p.is_file()), None)
            if path is None:
                break
            found[key] = path
        else:
            return found
    return None


def _server_reachable(timeout: float = 3.0) -> bool:
    """Whether torchvision's Fashion-MNIST mirror accepts a connection (no download yet)."""
    from torchvision.datasets import FashionMNIST

    url = urlparse(FashionMNIST.mirrors[0])
    try:
        with socket.create_connection((url.hostname, url.port or 80), timeout=timeout):
            return True
    except OSError:
        return False


def download(cache: Path) -> dict[str, Path] | None:
    """Fetch the files into ``cache`` with torchvision when the network allows; None if not."""
    if not _server_reachable():
        log.info("Fashion-MNIST download server unreachable; not downloading")
        return None
    from torchvision.datasets import FashionMNIST

    log.info("downloading Fashion-MNIST into %s", cache)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        FashionMNIST(str(cache), train=True, download=True)
    except (OSError, RuntimeError) as e:
        log.warning("Fashion-MNIST download failed: %s", e)
        return None
    return find_files(cache)


@contextlib.contextmanager
def _cache_lock(cache: Path):
    """Hold an exclusive lock on ``cache`` (blocking) while looking and downloading there, so
    one process downloads and the others wait for it instead of writing the same files. Without
    a writable cache folder there is nothing to lock and nothing a download could write."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        f = open(cache / ".download.lock", "a")  # noqa: SIM115 (closed below)
    except OSError:
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        yield


def _cached_or_download(cache: Path) -> dict[str, Path] | None:
    """The files in ``cache``, downloaded there first if need be; one process at a time (files
    being downloaded by another process are not looked at half written)."""
    with _cache_lock(cache):
        if (found := find_files(cache)) is not None:  # there, or another process fetched them
            return found
        return download(cache)


def _root_problem(folder: Path) -> str:
    """What is wrong with a ``data.root`` that :func:`find_files` did not accept."""
    if not folder.is_dir():
        return "is a file, not a folder" if folder.exists() else "no such folder"
    missing = [n for n in FILES.values() if not any(p.is_file() for p in folder.glob(f"{n}*"))]
    if len(missing) == len(FILES):
        return "holds none of the four Fashion-MNIST IDX files"
    if missing:
        return f"lacks {', '.join(f'{n}[.gz]' for n in missing)}"
    return "holds the four file names, but not all as readable files"


def locate(root: str | Path = "", system_dir: Path = SYSTEM_DIR, cache: Path = CACHE_DIR):
    """The paths of the four IDX files, from the places the module docstring lists.

    A ``root`` that is given but does not hold the files is an error: the run never falls back
    to another copy of the data behind the user's back.
    """
    names = ", ".join(f"{n}[.gz]" for n in FILES.values())
    if root:
        folder = Path(root).expanduser()
        if (found := find_files(folder)) is not None:
            return found
        raise DataError(
            f"data.root {folder}: {_root_problem(folder)} (looked for {names} there and in "
            f"its FashionMNIST/raw). Set data.root to the folder holding them, or leave "
            f"data.root empty to use the Debian package (apt-get install -y "
            f"dataset-fashion-mnist, into {system_dir}) or a download into {cache}."
        )
    if (found := find_files(system_dir)) is not None:
        return found
    tried = [str(system_dir), str(cache)]
    if (found := _cached_or_download(cache)) is not None:
        return found
    raise DataError(
        f"Fashion-MNIST not found (looked for {names} in {', '.join(tried)}). Any one of these "
        f"works: (1) set data.root to a folder holding the four IDX files; (2) install the "
        f"Debian package: apt-get install -y dataset-fashion-mnist (files land in {system_dir}); "
        f"(3) allow network access so torchvision can download it into {cache}."
    )


def load(root: str | Path = "", **where) -> dict[str, torch.Tensor]:
    """Fashion-MNIST in memory: uint8 images (N, 1, 28, 28) and int64 labels, train and test.

    ``where`` passes ``system_dir`` / ``cache`` to :func:`locate`. Checks that each split's
    image and label counts agree and that every label is a class index 0-9.
    """
    paths = locate(root, **where)
    out = {}
    for split in ("train", "test"):
        images = read_images(paths[f"{split}_images"])
        labels = read_labels(paths[f"{split}_labels"])
        if len(images) != len(labels):
            raise DataError(
                f"{paths[f'{split}_images']} holds {len(images)} images but "
                f"{paths[f'{split}_labels']} holds {len(labels)} labels; the files come from "
                "different data sets; replace them with a matching set"
            )
        if labels.max() >= len(CLASSES):
            raise DataError(
                f"{paths[f'{split}_labels']}: label {int(labels.max())} is not a Fashion-MNIST "
                "class (0-9); replace the file"
            )
        out[f"{split}_images"] = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 28, 28)
        out[f"{split}_labels"] = torch.from_numpy(labels.astype(np.int64))
    log.info(
        "Fashion-MNIST from %s: %d train, %d test",
        paths["train_images"].parent,
        len(out["train_labels"]),
        len(out["test_labels"]),
    )
    return out

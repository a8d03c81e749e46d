"""Small, valid Fashion-MNIST files for tests (never downloaded)."""

from pathlib import Path

import numpy as np

from alexnet2012.data.idx import write_idx


def make_fashion(folder: Path, n_train=120, n_test=40, gz=True) -> Path:
    """Four small, valid Fashion-MNIST-shaped IDX files in ``folder``."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", np.arange(n) % 10)
    return folder

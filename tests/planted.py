"""Files with a planted payload: a pickled object whose unpickling would touch a marker file.

A test plants one in a checkpoint (with a matching checksum file, written as the project writes
its own), a ``.pth`` or a pickled ``.npy``, runs a command on it, and checks that the marker
never appears.
"""

import hashlib
import pathlib
from pathlib import Path

import numpy as np
import torch

from alexnet2012.training.checkpoint import FORMAT


class Planted:
    """Unpickled in full, this runs ``marker.touch()``."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def sign(path: Path) -> None:
    """A checksum file next to ``path`` that matches it, in ``sha256sum`` format."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (path.parent / (path.name + ".sha256")).write_text(f"{digest}  {path.name}\n")


def plant_checkpoint(path: Path, marker: Path, like: Path | None = None) -> Path:
    """Checkpoint ``path`` (signed): ``like``'s payload, or a marked stub, plus the payload."""
    data = torch.load(like, weights_only=True) if like else {"format": FORMAT, "model": {}}
    torch.save({**data, "extra": Planted(marker)}, path)
    sign(path)
    return path


def plant_pth(path: Path, marker: Path) -> Path:
    """A ``.pth`` state dict that also holds the payload."""
    torch.save({"features.0.weight": torch.zeros(2), "extra": Planted(marker)}, path)
    return path


def plant_npy(path: Path, marker: Path, weights: dict | None = None) -> Path:
    """A pickled ``.npy`` dict, as the old Caffe-to-NumPy ports wrote (with the payload, unless
    ``weights`` is given)."""
    data = weights if weights is not None else {"conv1": {"weights": Planted(marker)}}
    np.save(path, np.array(data, dtype=object), allow_pickle=True)
    return path

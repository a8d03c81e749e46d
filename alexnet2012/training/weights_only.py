"""Reading torch files that may come from elsewhere: torch's weights-only unpickler, and nothing
that runs code.

A run folder or a weights file can be copied from a colleague or downloaded; a checksum file
next to it is no signature, since whoever wrote the one wrote the other. So every ``.pt``/``.pth``
the project opens goes through :func:`load`: tensors, numbers, strings and plain containers
(dict, list, tuple, ``None``) are rebuilt, and any other pickled type (a class, a function, an
object whose ``__reduce__`` would run a command) is refused by name before it runs. The
project's own checkpoints hold nothing else (config, model, optimizer, schedule, state, step,
rng, cuda_rng, format), so :data:`SAFE_GLOBALS` is empty: a type that a checkpoint needs is
added there by name, nothing more.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

SAFE_GLOBALS: list = []  # types beyond tensors and plain containers: none needed
_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_REASON = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\. Please|\n\n|$)", re.S)


class UnsafeFileError(ValueError):
    """A torch file holding pickled types that the weights-only unpickler does not rebuild."""


def refused_types(path: str | Path) -> list[str]:
    """The pickled types in ``path`` that the weights-only unpickler would refuse, read off the
    pickle without running it ([] for a file in torch's old non-zip format)."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        return []
    allowed = {f"{t.__module__}.{t.__qualname__}" for t in SAFE_GLOBALS}
    return sorted(name for name in found if name not in allowed)


def load(path: str | Path, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; :class:`UnsafeFileError` naming the file and the
    types it met when it holds more than tensors and plain containers. Other errors (a damaged
    or foreign file) propagate as torch raises them."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        types = refused_types(path) or _GLOBAL.findall(str(e))
        if not types:
            reason = _REASON.search(str(e))
            raise pickle.UnpicklingError(reason.group(1).strip() if reason else str(e)) from None
        raise UnsafeFileError(
            f"{path}: refused, it holds pickled {', '.join(types)}; torch files are read "
            "weights-only (tensors, numbers, strings and plain containers) so that no file can "
            "run code here. Use a checkpoint written by alexnet2012 or a plain state dict"
        ) from None

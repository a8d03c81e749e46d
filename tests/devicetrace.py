"""Where the operations that make a batch run, and how data crosses to the device (tests only).

:class:`DeviceTrace` records every aten operation run inside it (this thread only): each copy
from the host to the device (non-blocking? from pinned memory?), each read of the device back
to the host (a synchronisation), and each operation that mixes host tensors into device work
(an implicit copy, which waits for the stream). Used by tests/data/test_device_inputs.py (the
"meta" device standing in for a GPU) and tests/test_gpu.py (CUDA); it needs only torch.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _devices(tree) -> set[str]:
    """Device types of the tensors in ``tree``; 0-dim host tensors (wrapped Python numbers,
    which every device takes as scalars) are left out."""
    return {
        t.device.type
        for t in tree_flatten(tree)[0]
        if isinstance(t, torch.Tensor) and not (t.device.type == "cpu" and t.dim() == 0)
    }


def _pinned(t: torch.Tensor) -> bool:
    try:
        return bool(t.is_pinned())
    except RuntimeError:  # no accelerator to ask
        return False


class DeviceTrace(TorchDispatchMode):
    """``with DeviceTrace("cuda") as trace: ...``; then ``copies``, ``reads`` and ``mixed``."""

    def __init__(self, device: str):
        super().__init__()
        self.device = device
        self.copies: list[dict] = []  # host -> device: {"non_blocking", "pinned", "shape"}
        self.reads: list[str] = []  # device -> host
        self.mixed: list[str] = []  # device work given host tensors

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if name in ("aten._to_copy.default", "aten.copy_.default"):
            if name == "aten.copy_.default":  # copy_(dst, src, non_blocking)
                source, dst = args[1], args[0].device.type
                blocking = not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
            else:  # _to_copy(src, dtype=, device=, non_blocking=, ...)
                source = args[0]
                dst = torch.device(kwargs.get("device") or source.device).type
                blocking = not kwargs.get("non_blocking", False)
            src = source.device.type
            if src == "cpu" and dst == self.device:
                self.copies.append({"non_blocking": not blocking, "pinned": _pinned(source),
                                    "shape": tuple(source.shape)})  # fmt: skip
            elif src == self.device and dst == "cpu":
                self.reads.append(name)
        elif name == "aten._local_scalar_dense.default" and self.device in _devices(args):
            self.reads.append(f"{name} (.item())")
        else:
            ins = _devices((args, kwargs))
            if self.device in ins and "cpu" in ins:
                self.mixed.append(name)
        return func(*args, **kwargs)

    def problems(self) -> list[str]:
        """What makes the host wait for the device: reads, implicit and blocking copies."""
        out = [f"{r}: reads the device back to the host" for r in self.reads]
        out += [f"{m}: mixes host tensors into device work" for m in self.mixed]
        out += [f"a blocking host-to-device copy of {c['shape']}" for c in self.copies
                if not c["non_blocking"]]  # fmt: skip
        return out

"""The two-tower network emulated in one process on CUDA equals the CPU result (needs CUDA).

Logits and every parameter gradient of a fixed batch, as relative errors ``|a - b| / |b|`` per
tensor: fp32 (TF32 off) within 1e-3, bf16 autocast within 5e-2, contiguous and channels_last.
Skipped without CUDA. Runs under pytest, or without it (the GPU machine may lack pytest)::

    PYTHONPATH=. python tests/test_gpu.py
"""

import sys
from contextlib import contextmanager

import torch

from alexnet2012.model import AlexNet2012
from alexnet2012.parallel import Execution

try:
    import pytest

    requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
except ImportError:  # run as a script on a machine without pytest

    def requires_cuda(fn):
        return fn


# (name, widths conv1..fc7 or None for the paper's, input size, batch)
NETS = [("debug", (16, 32, 48, 48, 32, 64, 64), 95, 16), ("full", None, 224, 8)]


def _net(widths, size) -> AlexNet2012:
    # kaiming keeps every layer's signal alive; no dropout: masks are drawn on the device
    return AlexNet2012(num_classes=10, in_channels=1, widths=widths, input_size=size,
                       dropout="none", init="kaiming", seed=0)  # fmt: skip


def _run(widths, size, n, device, amp=False, channels_last=False) -> dict[str, torch.Tensor]:
    """Logits and gradients (float32, on the CPU) of one forward/backward of the fixed batch."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)
    ex = Execution(_net(widths, size))  # one process: the two towers as grouped layers
    ex.model.to(device)
    x, y = x.to(device), y.to(device)
    if channels_last:
        ex.model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        out = ex.forward(x)
        loss = ex.loss(out, y)
    loss.backward()
    res = {"logits": out.detach().float().cpu()}
    res.update({k: p.grad.float().cpu() for k, p in ex.model.named_parameters()})
    return res


@contextmanager
def _strict_fp32():
    """TF32 off in cuDNN and matmuls, so fp32 on CUDA is fp32."""
    b = torch.backends
    saved = b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32
    b.cudnn.allow_tf32 = b.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32 = saved


def _check(amp: bool, tol: float) -> list[str]:
    """One line per (net, layout): the worst relative error; raises if any exceeds ``tol``."""
    lines = []
    for name, widths, size, n in NETS:
        ref = _run(widths, size, n, torch.device("cpu"))
        for channels_last in (False, True):
            got = _run(widths, size, n, torch.device("cuda"), amp, channels_last)
            err = {
                k: ((got[k] - v).norm() / v.norm().clamp_min(1e-30)).item() for k, v in ref.items()
            }
            worst = max(err, key=err.get)
            where = f"{name} {'bf16' if amp else 'fp32'} channels_last={channels_last}"
            assert err[worst] <= tol, f"{where}: {worst} off by {err[worst]:.2e} > {tol}"
            lines.append(f"{where}: worst {worst} {err[worst]:.2e} (tolerance {tol})")
    return lines


@requires_cuda
def test_cuda_fp32_equals_cpu():
    with _strict_fp32():
        _check(amp=False, tol=1e-3)


@requires_cuda
def test_cuda_bf16_autocast_close_to_cpu():
    _check(amp=True, tol=5e-2)


if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("tests/test_gpu.py: CUDA is not available here; skipped")
        sys.exit(0)
    print(f"tests/test_gpu.py on {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    with _strict_fp32():
        report = _check(amp=False, tol=1e-3)
    report += _check(amp=True, tol=5e-2)
    print("\n".join(report))
    print("tests/test_gpu.py: passed")

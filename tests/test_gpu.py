"""The two-tower network emulated in one process on CUDA equals the CPU result (needs CUDA).

Logits and every parameter gradient of a fixed batch, as relative errors ``|a - b| / |b|`` per
tensor, against the CPU in float64 (CPU fp32 itself was off by 6e-4 in the conv1-conv4
gradients of the full net at batch 8, all from conv5's input gradient; float64 is exact enough).
fp32 on CUDA (TF32 off) must be within 1e-3 everywhere. bf16 autocast: logits within 5e-2, each
gradient within 0.5, because rounding every layer's activations and gradients to bf16 moves the
early layers' gradients by 10-30% (measured with CPU bf16 autocast: fc8 1e-2, fc6 5e-2, conv1
0.2-0.3), while a wrong layout or tower order leaves them uncorrelated (about 1.4).
The batch is smooth images (7x7 noise upsampled, like upsampled Fashion-MNIST); white noise
makes conv1's weight gradient a sum with heavy cancellation. Contiguous and channels_last.
The stop vote's deferred read (pinned copy, event) is checked too. Skipped without CUDA. Runs
under pytest, or without it (the GPU machine may lack pytest)::

    PYTHONPATH=. python tests/test_gpu.py
"""

import signal
import sys
from contextlib import contextmanager
from functools import lru_cache
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from alexnet2012.nets.model import AlexNet2012
from alexnet2012.parallel import comm
from alexnet2012.parallel.execution import Execution
from alexnet2012.training import stopping

try:
    import pytest

    requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
except ImportError:  # run as a script on a machine without pytest

    def requires_cuda(fn):
        return fn


# (name, widths conv1..fc7 or None for the paper's, input size, batch)
NETS = [("debug", (16, 32, 48, 48, 32, 64, 64), 95, 16), ("full", None, 224, 4)]
DEVICE = "cuda"


def _net(widths, size) -> AlexNet2012:
    # kaiming keeps every layer's signal alive; no dropout: masks are drawn on the device
    return AlexNet2012(num_classes=10, in_channels=1, widths=widths, input_size=size,
                       dropout="none", init="kaiming", seed=0)  # fmt: skip


def _run(net, device, dtype=torch.float32, amp=False, channels_last=False) -> dict:
    """Logits and gradients (float64, on the CPU) of one forward/backward of the fixed batch."""
    _, widths, size, n = net
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(n, 1, 7, 7, generator=g), size=(size, size), mode="bilinear")
    y = torch.randint(0, 10, (n,), generator=g)
    ex = Execution(_net(widths, size))  # one process: the two towers as grouped layers
    ex.model.to(device=device, dtype=dtype)
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    if channels_last:
        ex.model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        out = ex.forward(x)
        loss = ex.loss(out, y)
    loss.backward()
    res = {"logits": out.detach().double().cpu()}
    res.update({k: p.grad.double().cpu() for k, p in ex.model.named_parameters()})
    return res


@lru_cache
def _reference(net) -> dict:
    return _run(net, torch.device("cpu"), torch.float64)


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


def _check(amp: bool, logit_tol: float, grad_tol: float) -> list[str]:
    """One line per (net, layout) with the worst relative errors; raises past a tolerance."""
    lines = []
    for net in NETS:
        ref = _reference(net)
        for channels_last in (False, True):
            got = _run(net, torch.device(DEVICE), amp=amp, channels_last=channels_last)
            err = {
                k: ((got[k] - v).norm() / v.norm().clamp_min(1e-300)).item() for k, v in ref.items()
            }
            worst = max((k for k in err if k != "logits"), key=err.get)
            where = f"{net[0]} {'bf16' if amp else 'fp32'} channels_last={channels_last}"
            assert err["logits"] <= logit_tol, f"{where}: logits off by {err['logits']:.2e}"
            assert err[worst] <= grad_tol, f"{where}: {worst} grad off by {err[worst]:.2e}"
            lines.append(
                f"{where}: logits {err['logits']:.1e}, worst grad {worst} {err[worst]:.1e}"
            )
    return lines


@requires_cuda
def test_cuda_fp32_equals_cpu():
    with _strict_fp32():
        _check(amp=False, logit_tol=1e-3, grad_tol=1e-3)


@requires_cuda
def test_cuda_bf16_autocast_close_to_cpu():
    _check(amp=True, logit_tol=5e-2, grad_tol=0.5)


@requires_cuda
def test_deferred_stop_vote_on_cuda():
    """The stop vote's pinned copy and event (tests/training/test_stopping.py: two ranks)."""
    env = SimpleNamespace(world_size=2, device=torch.device(DEVICE), world=comm.single())
    vote, first = stopping.StopVote(env, every=10), None
    assert vote.deferred
    stopping._STOP["signal"] = 0
    try:
        for step in range(1, 41):
            if step == 13:
                stopping._STOP["signal"] = signal.SIGTERM
            if vote.poll(step) and first is None:
                first = step
        assert vote._host.is_pinned() and vote.now()
    finally:
        stopping._STOP["signal"] = 0
    assert first == 30, first  # cast at step 20, read at step 30


if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("tests/test_gpu.py: CUDA is not available here; skipped")
        sys.exit(0)
    print(f"tests/test_gpu.py on {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    with _strict_fp32():
        report = _check(amp=False, logit_tol=1e-3, grad_tol=1e-3)
    report += _check(amp=True, logit_tol=5e-2, grad_tol=0.5)
    test_deferred_stop_vote_on_cuda()
    report.append("deferred stop vote on CUDA: read one period late, from pinned memory")
    print("\n".join(report))
    print("tests/test_gpu.py: passed")

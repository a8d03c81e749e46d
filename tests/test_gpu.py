"""What only a GPU can show: CUDA numerics against the CPU, the training step without a host
sync, the compiled step, the stop vote's pinned read. Skipped without CUDA. Runs under pytest, or
as a script that runs every check (or those named), keeps going past a failing one and ends with
a summary (the GPU machine may lack pytest; launch/gpu_check.sh runs it)::

    PYTHONPATH=. python tests/test_gpu.py [fp32 bf16 norms fused sync compile vote]

Tolerances, each from a measurement (relative errors ``|a - b| / |b|`` per tensor, against the
CPU in float64; torch 2.14, the batches below: smooth images, 7x7 noise upsampled):

- fp32 (TF32 off): 1e-3 for logits and every gradient. CPU fp32 measured 3e-6 at worst (full
  net, channels_last, conv1's bias); 1e-3 leaves 300x for cuDNN's algorithms (Winograd, FFT)
  while a wrong layout or tower order is off by about 1.4. The check prints CPU fp32's error.
- bf16 autocast: logits 5e-2, each gradient 0.5. CPU bf16 autocast measured logits 5.7e-3,
  gradients up to 0.21 (conv1's, full net): rounding every activation and gradient to bf16
  moves the early layers' gradients by 10-20%; a wrong layout is still about 1.4.
- the norms under bf16 autocast: exactly the fp32 norm rounded once (as on the CPU).
- compiled against eager: losses within 1e-3 in fp32 (CPU inductor measured 1.2e-7 over these
  steps), 5e-2 in bf16 (the bf16 logits' own error); no graph after the first step, no break.
"""

import signal
import sys
from contextlib import contextmanager
from functools import lru_cache
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from alexnet2012.control import stopping
from alexnet2012.nets.model import AlexNet2012
from alexnet2012.parallel import comm
from alexnet2012.parallel.execution import Execution

try:
    import pytest

    requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
except ImportError:  # run as a script on a machine without pytest

    def requires_cuda(fn):
        return fn


# (name, widths conv1..fc7 or None for the paper's, input size, batch)
NETS = [("debug", (16, 32, 48, 48, 32, 64, 64), 95, 16), ("full", None, 224, 4)]
DEVICE = "cuda"
TOL = {"fp32": (1e-3, 1e-3), "bf16": (5e-2, 0.5)}  # (logits, gradients): the docstring
STEP_TOL = {"fp32": 1e-3, "bf16": 5e-2}  # compiled against eager losses
# the fused norms' check: (name, input shape, axis (0: across maps, 1: same map), groups, scale, k)
FUSED_CASES = [("LRN1", (8, 96, 55, 55), 0, 2, 1e-4, 2.0),
               ("LRN2", (8, 256, 27, 27), 0, 2, 1e-4, 2.0),
               ("Caffe LRN", (8, 96, 55, 55), 0, 1, 1e-4, 1.0),
               ("same-map", (8, 256, 27, 27), 1, 1, 1e-3, 1.0)]  # fmt: skip


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


def _errors(got: dict, ref: dict) -> dict:
    return {k: ((got[k] - v).norm() / v.norm().clamp_min(1e-300)).item() for k, v in ref.items()}


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


def _check(kind: str) -> list[str]:
    """One line per (net, layout) with the worst relative errors; AssertionError past a
    tolerance, after every case has run."""
    amp, (logit_tol, grad_tol) = kind == "bf16", TOL[kind]
    lines, bad = [], []
    for net in NETS:
        ref = _reference(net)
        cpu = "" if amp else max(_errors(_run(net, torch.device("cpu")), ref).values())
        cpu = f" (CPU fp32: {cpu:.1e})" if cpu != "" else ""
        for channels_last in (False, True):
            got = _run(net, torch.device(DEVICE), amp=amp, channels_last=channels_last)
            err = _errors(got, ref)
            worst = max((k for k in err if k != "logits"), key=err.get)
            where = f"{net[0]} {kind} channels_last={channels_last}"
            lines.append(f"{where}: logits {err['logits']:.1e}, worst grad {worst} "
                         f"{err[worst]:.1e}{cpu}")  # fmt: skip
            if err["logits"] > logit_tol or err[worst] > grad_tol:
                bad.append(f"{lines[-1]} (tolerances {logit_tol}, {grad_tol})")
    assert not bad, "\n".join(bad)
    return lines


def _fp32() -> list[str]:
    with _strict_fp32():
        return _check("fp32")


def _bf16() -> list[str]:
    return _check("bf16")


def _norms() -> list[str]:
    """The response norms compute in fp32 under autocast and return bf16 (nets/layers.py)."""
    from alexnet2012.nets.layers import CrossLRN, SpatialNorm, TowerLRN

    x = (torch.randn(8, 64, 27, 27, device=DEVICE) * 80).to(torch.bfloat16)
    for norm in (TowerLRN(), CrossLRN(), SpatialNorm()):
        want = norm(x.float()).to(torch.bfloat16)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = norm(x)
        assert got.dtype == torch.bfloat16 and torch.equal(got, want), type(norm).__name__
    return ["LRN, Caffe's LRN and the spatial norm: the fp32 norm rounded once to bf16"]


def _fused() -> list[str]:
    """The fused norms' Triton kernels (nets/norm_kernels.py) against the formulas in float64 on
    the CPU, forward and gradient, at full-size shapes, fp32 and bf16, both layouts; tolerances
    as tests/nets/test_fused_norms.py (1e-5 fp32, 1e-2 bf16 in and out)."""
    from alexnet2012.nets import norms

    lines, bad = [], []
    g = torch.Generator().manual_seed(0)
    for name, shape, axis, groups, scale, k in FUSED_CASES:
        x, grad = torch.randn(shape, generator=g) * 80, torch.randn(shape, generator=g)
        args = (axis, groups, 5, scale, 0.75, k)
        ref = x.double().requires_grad_()
        want = norms.response_norm_formula(ref, *args)
        want.backward(grad.double())
        for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
            for channels_last in (False, True):
                a = x.to(DEVICE, dtype)
                if channels_last:
                    a = a.contiguous(memory_format=torch.channels_last)
                assert norms._triton_for(a), "Triton is not available: the kernels did not run"
                a = a.detach().clone().requires_grad_()  # a leaf in its layout
                out = norms.response_norm(a, *args)
                out.backward(grad.to(DEVICE, dtype))
                errs = [((t.double().cpu() - w).norm() / w.norm()).item()
                        for t, w in ((out, want), (a.grad, ref.grad))]  # fmt: skip
                where = f"{name} {str(dtype)[6:]} channels_last={channels_last}"
                lines.append(f"{where}: forward {errs[0]:.1e}, gradient {errs[1]:.1e}")
                if max(errs) > tol:
                    bad.append(f"{lines[-1]} (tolerance {tol})")
    assert not bad, "\n".join(bad)
    return lines


def _sync() -> list[str]:
    """The trainer's per-step work (batch, step, metrics window) under sync-debug "error":
    eager and compiled, bf16 and channels_last; the batch's host data arrives pinned and
    non-blocking (tests/gpu_step.py, tests/devicetrace.py)."""
    from gpu_step import no_sync_steps

    return no_sync_steps(DEVICE)


def _compile() -> list[str]:
    from gpu_step import compiled_against_eager

    with _strict_fp32():
        lines = compiled_against_eager(DEVICE, "fp32", STEP_TOL["fp32"])
    return lines + compiled_against_eager(DEVICE, "bf16", STEP_TOL["bf16"])


def _vote() -> list[str]:
    """The stop vote's pinned copy and event (tests/control/test_stopping.py: two ranks)."""
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
    return ["deferred stop vote: read one period late, from pinned memory"]


CHECKS = {"fp32": _fp32, "bf16": _bf16, "norms": _norms, "fused": _fused, "sync": _sync,
          "compile": _compile, "vote": _vote}  # fmt: skip


@requires_cuda
def test_cuda_fp32_equals_cpu():
    _fp32()


@requires_cuda
def test_cuda_bf16_autocast_close_to_cpu():
    _bf16()


@requires_cuda
def test_norms_in_fp32_under_bf16_autocast():
    _norms()


@requires_cuda
def test_fused_norm_kernels_equal_the_formulas():
    _fused()


@requires_cuda
def test_training_step_has_no_host_sync():
    _sync()


@requires_cuda
def test_compiled_step_trains_like_eager():
    _compile()


@requires_cuda
def test_deferred_stop_vote_on_cuda():
    _vote()


def main(names: list[str]) -> int:
    """Run the checks ``names`` (all when empty); 0 when all passed."""
    if not torch.cuda.is_available():
        print("tests/test_gpu.py: CUDA is not available here; skipped")
        return 0
    print(f"tests/test_gpu.py on {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    results = {}
    for name in names or list(CHECKS):
        try:
            lines = CHECKS[name]()
            results[name] = "ok"
            print("\n".join(f"{name}: {line}" for line in lines))
        except Exception as e:  # noqa: BLE001 (reported, and the other checks still run)
            results[name] = f"FAILED: {type(e).__name__}: {e}"
            print(f"{name}: {results[name]}")
    print("tests/test_gpu.py summary: " + "; ".join(f"{k} {v.splitlines()[0]}"
                                                     for k, v in results.items()))  # fmt: skip
    failed = [k for k, v in results.items() if v != "ok"]
    print("tests/test_gpu.py: " + (f"FAILED {', '.join(failed)}" if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

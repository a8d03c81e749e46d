"""The fused response norms (nets/norms.py, nets/norm_kernels.py) against today's formulas
differentiated by autograd: forward and every gradient, each norm, both layouts.

The torch path (CPU, float64) runs here directly; the Triton kernels run under Triton's
interpreter (``TRITON_INTERPRET=1``, read when the kernels are defined, so in a child process)
on CPU tensors, as they run on a GPU. tests/test_gpu.py repeats the comparison on CUDA at full
size, fp32 and bf16.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexnet2012.nets.norms import CHANNEL, SPATIAL, response_norm, response_norm_formula

# (name, axis, groups, size, scale, k): the three norms of the presets, an even window, a
# tower LRN on a rank (one group)
CASES = [
    ("tower_lrn", CHANNEL, 2, 5, 1e-4, 2.0),
    ("tower_lrn_rank", CHANNEL, 1, 5, 1e-4, 2.0),
    ("cross_lrn", CHANNEL, 1, 5, 1e-4, 1.0),
    ("even_window", CHANNEL, 2, 4, 1e-2, 1.0),
    ("spatial", SPATIAL, 1, 5, 1e-3, 1.0),
]


def _pair(case, dtype, channels_last, seed=0):
    """(fused out, fused grad, formula out, formula grad) for one random input and gradient;
    activations of conv size (|a| ~ 80) so every window sum matters against k."""
    _, axis, groups, size, scale, k = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 12, 7, 6, generator=g, dtype=torch.float64) * 80
    grad = torch.randn(x.shape, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    a = x.to(dtype).clone().requires_grad_()  # two leaves, also for float64
    b = x.to(dtype).clone().requires_grad_()
    out = response_norm(a, axis, groups, size, scale, 0.75, k)
    want = response_norm_formula(b, axis, groups, size, scale, 0.75, k)
    out.backward(grad.to(dtype))
    want.backward(grad.to(dtype))
    return out, a.grad, want, b.grad


def _rel(got, want) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_torch_path_equals_formula(case, channels_last):
    """float64: the closed form equals autograd through the formula to rounding; fp32: within
    1e-6 (autograd's own fp32 rounding); the output keeps the input's layout and dtype."""
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        out, grad, want, want_grad = _pair(case, dtype, channels_last)
        assert out.dtype == grad.dtype == dtype
        assert _rel(out, want) < tol and _rel(grad, want_grad) < tol, case[0]
        if channels_last:
            assert out.is_contiguous(memory_format=torch.channels_last) or case[1] == CHANNEL


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_batch_chunks_give_the_whole_batch_result(case, monkeypatch):
    """The CPU path works through the batch a few samples at a time (norms.CHUNK): the output
    and gradient of one pass (one sample per chunk here), up to the last bit of fp32 where a
    chunk's vectorised and scalar tails round differently."""
    from alexnet2012.nets import norms

    whole = _pair(case, torch.float32, True)
    monkeypatch.setattr(norms, "CHUNK", 600)  # 12 x 7 x 6 = 504 elements a sample
    chunked = _pair(case, torch.float32, True)
    for a, b in zip(whole[:2], chunked[:2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=case[0])


def test_lrn_forward_is_the_formulas_result_bit_for_bit():
    """LRN's CPU forward is the formula's arithmetic in the same order (the same-map norm sums
    its square as rows then columns, not avg_pool2d's order: within fp32 rounding above)."""
    for case in CASES:
        if case[1] == CHANNEL:
            out, _, want, _ = _pair(case, torch.float32, False)
            assert torch.equal(out, want), case[0]


@pytest.mark.parametrize("case", CASES[:1] + CASES[-1:], ids=["lrn", "spatial"])
def test_gradcheck(case):
    _, axis, groups, size, _, k = case
    x = (torch.randn(2, 8, 5, 5, dtype=torch.float64) * 3).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: response_norm(t, axis, groups, size, 0.5, 0.75, k), (x,), eps=1e-6, atol=1e-7
    )


LAYOUTS = {
    "contiguous": lambda x: x,
    "channels_last": lambda x: x.contiguous(memory_format=torch.channels_last),
    "a slice of the maps": lambda x: torch.cat([x, x], 1)[:, : x.shape[1]],  # not dense
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("case", [CASES[0], CASES[4]], ids=[CASES[0][0], CASES[4][0]])
@pytest.mark.parametrize("batch", [3, 1200], ids=["whole", "chunked"])
def test_the_fake_kernels_promise_the_real_layouts(case, layout, batch):
    """What torch.compile is told of the outputs (the fake kernels: strides, dtypes) is what
    the operator returns, forward and backward, for each layout a net hands it (a window
    across the maps of a channels_last input once came out contiguous, and a compiled
    channels_last net failed on it)."""
    from alexnet2012.nets.norms import response_norm_op

    _, axis, groups, size, scale, k = case
    x = LAYOUTS[layout](torch.randn(batch, 12, 7, 6) * 80)
    checks = ("test_schema", "test_faketensor", "test_autograd_registration")
    torch.library.opcheck(response_norm_op, (x, axis, groups, size, scale, 0.75, k),
                          test_utils=checks)  # fmt: skip


def test_bad_shapes_are_named():
    x = torch.randn(1, 6, 4, 4)
    with pytest.raises(ValueError, match="6 channels do not split into 4 groups"):
        response_norm(x, CHANNEL, 4, 5, 1e-4, 0.75, 2.0)
    with pytest.raises(ValueError, match="odd window"):
        response_norm(x, SPATIAL, 1, 4, 1e-3, 0.75, 1.0)


def interpreted_errors() -> dict:
    """Worst relative errors of the Triton kernels against the float64 formula (run under
    ``TRITON_INTERPRET=1``): {(case, dtype, layout): (forward, gradient)}."""
    from alexnet2012.nets import norms

    out = {}
    for case in CASES:
        for dtype in (torch.float32, torch.bfloat16):
            for channels_last in (False, True):
                x = torch.zeros(1, 2, 1, 1, dtype=dtype)
                assert norms._triton_for(x), "the Triton path is not taken under the interpreter"
                got, grad, _, _ = _pair(case, dtype, channels_last)
                _, _, want, want_grad = _pair(case, torch.float64, channels_last)
                key = f"{case[0]} {str(dtype)[6:]} {'nhwc' if channels_last else 'nchw'}"
                out[key] = (_rel(got, want), _rel(grad, want_grad))
    from alexnet2012.nets import norm_kernels

    norm_kernels._wide = lambda x: True  # the 64-bit offsets of tensors of 2^31 elements
    for case in (CASES[0], CASES[-1]):
        got, grad, _, _ = _pair(case, torch.float32, True)
        _, _, want, want_grad = _pair(case, torch.float64, True)
        out[f"{case[0]} float32 nhwc int64"] = (_rel(got, want), _rel(grad, want_grad))
    return out


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton not installed")
def test_triton_kernels_under_the_interpreter():
    """fp32 within 1e-5 of float64 (tests/test_gpu.py's fp32 tolerance is 1e-3); bf16 in and out
    within 1e-2 (the input and output roundings, 2^-8 each; the interpreter's bf16 casts)."""
    code = (
        "import json, sys; sys.path.insert(0, 'tests/nets'); "
        "from test_fused_norms import interpreted_errors; "
        "print(json.dumps(interpreted_errors()))"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600, cwd=root)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    errors = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(errors) == len(CASES) * 4 + 2
    for key, (fwd, grad) in errors.items():
        tol = 1e-5 if "float32" in key else 1e-2
        assert fwd < tol and grad < tol, (key, fwd, grad)

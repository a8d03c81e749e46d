"""The 2012 response norms as one fused operation each way, with a closed-form gradient.

``b = a * d^-beta`` with ``d = k + s * sum_{j in W} a_j^2`` over a window ``W``: across the maps
of one group (LRN; the groups are the towers, the window clipped at each tower's edges) or over
a ``size x size`` square of one map (the same-map norm; zeros past the edges count). The
gradient in closed form (spec gpu.md, [C12] ``convResponseNormUndo``)::

    dL/da_j = g_j * d_j^-beta - 2 * beta * s * a_j * sum_{i in W'(j)} g_i * a_i * d_i^(-beta-1)

(``W'``: the mirrored window; the same window when its size is odd). On CUDA they are Triton
kernels (:mod:`.norm_kernels`: one forward, two backward, fp32 inside, the input's dtype in and
out, any dense layout, ``d`` recomputed as [C12]'s ``conserveMem`` does); elsewhere, and for
float64, the same closed form in torch operations. Both are the custom operator
``alexnet2012::response_norm``, so ``torch.compile`` keeps it whole (no graph break). The
torch path keeps ``d`` for its backward (on the CPU its recomputation is a fifth of the
backward's time).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

CHANNEL, SPATIAL = 0, 1  # the window's axis: across maps (LRN), within one map (5x5)
LOW = (torch.float16, torch.bfloat16)


def _triton_for(x: torch.Tensor) -> bool:
    """The Triton kernels run ``x``: CUDA, or any device under ``TRITON_INTERPRET=1``; not
    float64 (the reference precision stays in torch)."""
    if x.dtype not in (torch.float32, *LOW):
        return False
    if not (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        return False
    from alexnet2012.nets import norm_kernels

    return norm_kernels.available()


# ----- the closed form in torch operations (CPU, float64, and no Triton) ------------------------
def _window_sum(v: torch.Tensor, axis: int, groups: int, size: int, mirror: bool = False):
    """Sum of ``v`` over each element's window as sums of shifted views: channels of its group
    (``CHANNEL``; ``mirror`` flips an even window) or a ``size x size`` square (``SPATIAL``,
    zeros past the edges; rows, then columns): on the CPU several times faster than avg_pool2d."""
    if axis == SPATIAL:
        h, w, r = v.shape[2], v.shape[3], size // 2
        rows = _shifted_sum(F.pad(v, (r, r, r, r)), 3, w, size)
        return _shifted_sum(rows, 2, h, size)
    before, after = size // 2, (size - 1) // 2
    if mirror:
        before, after = after, before
    g = v.unflatten(1, (groups, v.shape[1] // groups))  # (N, groups, C/groups, H, W): a view
    c = g.shape[2]
    padded = F.pad(g, (0, 0, 0, 0, before, after))  # zeros past each group's edges
    return _shifted_sum(padded, 2, c, size).flatten(1, 2)


def _shifted_sum(padded: torch.Tensor, dim: int, n: int, size: int) -> torch.Tensor:
    """``sum(padded.narrow(dim, i, n) for i in range(size))``, added in place in that order."""
    acc = padded.narrow(dim, 0, n).clone()
    for i in range(1, size):
        acc += padded.narrow(dim, i, n)
    return acc


def _step(axis: int, size: int, scale: float) -> float:
    """``s`` of ``d = k + s * window sum``: alpha / size (LRN), scale / size^2 (a mean)."""
    return scale / (size * size if axis == SPATIAL else size)


def _denominator(x, axis, groups, size, scale, k):
    """``d = k + s * window sum of x^2``; LRN's in the order of the formula (bit for bit)."""
    return k + _step(axis, size, scale) * _window_sum(x * x, axis, groups, size)


CHUNK = 2**19  # elements a CPU pass works on at once: a few MB, so its temporaries stay cached


def _by_samples(fn, *tensors):
    """``fn`` on the batch in chunks of about :data:`CHUNK` elements, the results concatenated:
    the same arithmetic (nothing here mixes samples), and on the CPU at full size 1.4-2.8x
    faster than the formulas' whole-batch passes, whose temporaries spill out of the cache
    (BENCHMARKS, "Response norms, fused")."""
    per = max(tensors[0][0].numel(), 1) if len(tensors[0]) else 1
    n = max(1, CHUNK // per)
    if len(tensors[0]) <= n:
        return fn(*tensors)
    parts = [fn(*chunk) for chunk in zip(*(t.split(n) for t in tensors), strict=True)]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))
    return torch.cat(parts)


def _forward_torch(x, axis, groups, size, scale, beta, k):
    def fwd(x):
        d = _denominator(x, axis, groups, size, scale, k)
        return x / d.pow(beta), d

    return _by_samples(fwd, x)


def _backward_torch(g, x, d, axis, groups, size, scale, beta):
    s = _step(axis, size, scale)

    def bwd(g, x, d):
        p = d.pow(-beta)
        t = g * x * p / d  # g_i * a_i * d_i^(-beta-1)
        return g * p - (2 * beta * s) * x * _window_sum(t, axis, groups, size, mirror=True)

    return _by_samples(bwd, g, x, d)


def _in_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in LOW else x


def _no_denominators(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(0, dtype=torch.float32)


def _laid_out_as(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` with the strides of ``torch.empty_like(x)``, what the fake kernels below promise
    torch.compile (a window sum across the maps of a channels_last ``x`` comes out contiguous):
    a copy only when they differ."""
    if t.stride() == torch.empty_like(x, device="meta").stride():  # strides only, no memory
        return t
    return torch.empty_like(x, dtype=t.dtype).copy_(t)


# ----- the operator ----------------------------------------------------------------------------
@torch.library.custom_op("alexnet2012::response_norm", mutates_args=())
def response_norm_op(
    x: torch.Tensor, axis: int, groups: int, size: int, scale: float, beta: float, k: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the norm, its denominators ``d``): kept for the backward on the torch path (memory is
    cheap there, arithmetic is not); empty on the Triton path, whose backward recomputes them."""
    if _triton_for(x):
        from alexnet2012.nets import norm_kernels

        return norm_kernels.forward(x, axis, groups, size, scale, beta, k), _no_denominators(x)
    out, d = _forward_torch(_in_fp32(x), axis, groups, size, scale, beta, k)
    return _laid_out_as(out.to(x.dtype), x), _laid_out_as(d, x)


@torch.library.custom_op("alexnet2012::response_norm_backward", mutates_args=())
def response_norm_backward_op(
    g: torch.Tensor,
    x: torch.Tensor,
    d: torch.Tensor,
    axis: int,
    groups: int,
    size: int,
    scale: float,
    beta: float,
    k: float,
) -> torch.Tensor:
    if _triton_for(x):
        from alexnet2012.nets import norm_kernels

        return norm_kernels.backward(g, x, axis, groups, size, scale, beta, k)
    g32, x32 = _in_fp32(g).to(_in_fp32(x).dtype), _in_fp32(x)
    if not d.numel():  # not kept (a forward on the Triton path): recomputed
        d = _denominator(x32, axis, groups, size, scale, k)
    return _laid_out_as(
        _backward_torch(g32, x32, d, axis, groups, size, scale, beta).to(x.dtype), x
    )


@response_norm_op.register_fake
def _(x, axis, groups, size, scale, beta, k):
    if _triton_for(x):
        return torch.empty_like(x), _no_denominators(x)
    return torch.empty_like(x), torch.empty_like(x, dtype=_in_fp32(x).dtype)


@response_norm_backward_op.register_fake
def _(g, x, d, axis, groups, size, scale, beta, k):
    return torch.empty_like(x)


def _setup(ctx, inputs, output):
    x, *ctx.args = inputs
    ctx.save_for_backward(x, output[1])


def _backward(ctx, grad, _grad_d):
    x, d = ctx.saved_tensors
    return (response_norm_backward_op(grad, x, d, *ctx.args),) + (None,) * 6


response_norm_op.register_autograd(_backward, setup_context=_setup)


def response_norm(x, axis: int, groups: int, size: int, scale: float, beta: float, k: float):
    """The norm of (N, C, H, W) ``x``; under autocast computed in fp32 from ``x`` and returned
    in the autocast dtype, rounded once (nets/layers.py ``in_fp32`` explains why).

    ``scale``: alpha of LRN (divided by ``size`` inside, as torch and [C12] do) or the
    same-map norm's scale (divided by ``size^2``: a mean over the square).
    """
    if axis == CHANNEL and x.shape[1] % groups:
        raise ValueError(f"{x.shape[1]} channels do not split into {groups} groups")
    if axis == SPATIAL and size % 2 == 0:
        raise ValueError(f"the same-map norm needs an odd window, got {size}")
    device = x.device.type
    if device != "meta" and torch.is_autocast_enabled(device):
        with torch.autocast(device, enabled=False):
            out, _ = response_norm_op(x, axis, groups, size, scale, beta, k)
        return out.to(torch.get_autocast_dtype(device))
    return response_norm_op(x, axis, groups, size, scale, beta, k)[0]


def response_norm_formula(x, axis, groups, size, scale, beta, k):
    """The same norm as plain torch operations differentiated by autograd: the reference the
    fused operator is tested and timed against (tests/nets/test_fused_norms.py, bench norms)."""
    parts = x.chunk(groups, dim=1) if axis == CHANNEL else (x,)
    outs = []
    for p in parts:  # today's formulas: a sum of shifted squares; avg_pool of the squares
        if axis == SPATIAL:
            sq = F.avg_pool2d(p * p, size, 1, size // 2, count_include_pad=True)
            outs.append(p / (k + scale * sq).pow(beta))
            continue
        c = p.shape[1]
        padded = F.pad(p * p, (0, 0, 0, 0, size // 2, (size - 1) // 2))
        window = sum(padded[:, i : i + c] for i in range(size))
        outs.append(p / (k + scale / size * window).pow(beta))
    return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]

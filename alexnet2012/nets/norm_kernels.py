"""Triton kernels of the response norms (:mod:`.norms`): one kernel forward, two backward.

Each program takes ``BLOCK`` consecutive elements in memory order, so any dense layout
(contiguous or channels_last) is read and written coalesced; an element's channel, row and
column come from the strides, and its window's neighbours are the same offsets shifted by a
multiple of a stride (masked past a group's or the map's edges). Arithmetic is fp32 whatever
the input's dtype; outputs are in the input's dtype. ``d`` is recomputed where it is needed,
as [C12]'s ``convResponseNormUndo`` with ``conserveMem`` (spec gpu.md):

    forward    b = a * d^-beta
    backward 1 t = g * a * d^(-beta-1)                      (fp32 buffer)
    backward 2 dx = g * d^-beta - 2 beta s a * sum_{W'} t

Triton ships with torch's CUDA builds; without it :func:`available` is False and
:mod:`.norms` computes the same closed form in torch. ``TRITON_INTERPRET=1`` runs the kernels
on CPU tensors (slowly), which is how the suite tests them without a GPU.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # a CPU build of torch without Triton: the torch path is used
    triton = None

BLOCK = 1024
CHANNEL, SPATIAL = 0, 1  # as in .norms


def available() -> bool:
    return triton is not None


if triton is not None:

    @triton.jit
    def _window(ptr, off, mask, c, h, w, sc, sh, sw, C, H, W, G,
                SIZE: tl.constexpr, AXIS: tl.constexpr, SQUARE: tl.constexpr,
                MIRROR: tl.constexpr):  # fmt: skip
        """Sum over each element's window of ptr's values (squared when SQUARE), in fp32."""
        acc = (off * 0).to(tl.float32)
        if AXIS == 0:  # across the maps of the element's group
            first = (c // G) * G
            for o in tl.static_range(SIZE):
                if MIRROR:
                    dc = SIZE // 2 - o
                else:
                    dc = o - SIZE // 2
                cc = c + dc
                ok = mask & (cc >= first) & (cc < first + G)
                v = tl.load(ptr + off + dc * sc, mask=ok, other=0.0).to(tl.float32)
                if SQUARE:
                    v = v * v
                acc += v
        else:  # a SIZE x SIZE square of the element's map
            for i in tl.static_range(SIZE):
                for j in tl.static_range(SIZE):
                    dh = i - SIZE // 2
                    dw = j - SIZE // 2
                    hh = h + dh
                    ww = w + dw
                    ok = mask & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                    v = tl.load(ptr + off + dh * sh + dw * sw, mask=ok, other=0.0)
                    v = v.to(tl.float32)
                    if SQUARE:
                        v = v * v
                    acc += v
        return acc

    @triton.jit
    def _coords(numel, sc, sh, sw, C, H, W, BLOCK: tl.constexpr, WIDE: tl.constexpr):
        """Offsets of this program's elements, their mask, channel, row and column; in int32
        (cheaper division) unless the tensor has 2^31 elements or more (WIDE)."""
        pid = tl.program_id(0)
        if WIDE:
            pid = pid.to(tl.int64)
        off = pid * BLOCK + tl.arange(0, BLOCK)
        mask = off < numel
        return off, mask, (off // sc) % C, (off // sh) % H, (off // sw) % W

    @triton.jit
    def _forward_kernel(x_ptr, out_ptr, numel, sc, sh, sw, C, H, W, G, s, beta, k,
                        SIZE: tl.constexpr, AXIS: tl.constexpr, BLOCK: tl.constexpr,
                        WIDE: tl.constexpr):  # fmt: skip
        off, mask, c, h, w = _coords(numel, sc, sh, sw, C, H, W, BLOCK, WIDE)
        a = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
        acc = _window(x_ptr, off, mask, c, h, w, sc, sh, sw, C, H, W, G, SIZE, AXIS, True, False)
        d = k + s * acc
        b = a * tl.exp2(-beta * tl.log2(d))
        tl.store(out_ptr + off, b.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _backward_t_kernel(g_ptr, x_ptr, t_ptr, numel, sc, sh, sw, C, H, W, G, s, beta, k,
                           SIZE: tl.constexpr, AXIS: tl.constexpr, BLOCK: tl.constexpr,
                           WIDE: tl.constexpr):  # fmt: skip
        off, mask, c, h, w = _coords(numel, sc, sh, sw, C, H, W, BLOCK, WIDE)
        a = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + off, mask=mask, other=0.0).to(tl.float32)
        acc = _window(x_ptr, off, mask, c, h, w, sc, sh, sw, C, H, W, G, SIZE, AXIS, True, False)
        d = k + s * acc
        t = g * a * tl.exp2((-beta - 1.0) * tl.log2(d))
        tl.store(t_ptr + off, t, mask=mask)

    @triton.jit
    def _backward_dx_kernel(g_ptr, x_ptr, t_ptr, dx_ptr, numel, sc, sh, sw, C, H, W, G,
                            s, beta, k, SIZE: tl.constexpr, AXIS: tl.constexpr,
                            BLOCK: tl.constexpr, WIDE: tl.constexpr):  # fmt: skip
        off, mask, c, h, w = _coords(numel, sc, sh, sw, C, H, W, BLOCK, WIDE)
        a = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + off, mask=mask, other=0.0).to(tl.float32)
        acc = _window(x_ptr, off, mask, c, h, w, sc, sh, sw, C, H, W, G, SIZE, AXIS, True, False)
        d = k + s * acc
        tsum = _window(t_ptr, off, mask, c, h, w, sc, sh, sw, C, H, W, G, SIZE, AXIS, False, True)
        dx = g * tl.exp2(-beta * tl.log2(d)) - 2.0 * beta * s * a * tsum
        tl.store(dx_ptr + off, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when dense in the contiguous or channels_last layout, else a contiguous copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def _like(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``g`` with ``x``'s strides (the kernels walk both in the same memory order)."""
    if g.stride() == x.stride():
        return g
    fmt = torch.contiguous_format if x.is_contiguous() else torch.channels_last
    return g.contiguous(memory_format=fmt)


def _args(x: torch.Tensor, axis: int, groups: int, size: int, scale: float):
    n, c, h, w = x.shape
    s = scale / (size * size if axis == SPATIAL else size)  # as .norms._step
    _, sc, sh, sw = x.stride()
    return (x.numel(), sc, sh, sw, c, h, w, c // groups), s


def _wide(x: torch.Tensor) -> bool:
    """Offsets need 64 bits: the last element's, plus a window's reach past it."""
    return x.numel() + BLOCK + 4 * max(x.stride()) >= 2**31


def _grid(x: torch.Tensor):
    return (triton.cdiv(x.numel(), BLOCK),)


def forward(x, axis: int, groups: int, size: int, scale: float, beta: float, k: float):
    x = _dense(x)
    out = torch.empty_like(x)
    if x.numel():
        geometry, s = _args(x, axis, groups, size, scale)
        _forward_kernel[_grid(x)](x, out, *geometry, s, beta, k, SIZE=size, AXIS=axis,
                                  BLOCK=BLOCK, WIDE=_wide(x))  # fmt: skip
    return out


def backward(g, x, axis: int, groups: int, size: int, scale: float, beta: float, k: float):
    x = _dense(x)
    g = _like(g, x)
    dx = torch.empty_like(x)
    if x.numel():
        t = torch.empty_like(x, dtype=torch.float32)
        geometry, s = _args(x, axis, groups, size, scale)
        grid, const = _grid(x), {"SIZE": size, "AXIS": axis, "BLOCK": BLOCK, "WIDE": _wide(x)}
        _backward_t_kernel[grid](g, x, t, *geometry, s, beta, k, **const)
        _backward_dx_kernel[grid](g, x, t, dx, *geometry, s, beta, k, **const)
    return dx

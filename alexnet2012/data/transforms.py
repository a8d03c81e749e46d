"""Batched augmentation of image tensors (N, C, H, W) on whatever device they live (ref §3).

Random numbers come from a CPU ``torch.Generator`` passed in and are moved to ``x.device``
afterwards (:func:`to_device`: pinned and non-blocking, so the training step never waits for the
copy), so one generator state gives bit-identical crops, flips and colour noise on every device
and every rank. Pixel values are in 0-255 units throughout, as in [C12].
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

# ref §3: [C14] ILSVRC-2012 RGB pixel PCA, 0-255 scale; std-devs sqrt(lambda), ascending, and
# their eigenvectors as the COLUMNS of this matrix.
ILSVRC2012_PCA_STDEVS = (19.720833, 37.093889, 121.780061)
ILSVRC2012_PCA_EIGVECS = (
    (0.417955, -0.712579, -0.563510),
    (-0.816981, -0.023542, -0.576184),
    (0.397311, 0.701196, -0.592003),
)
COLOUR_NOISE_STD = 0.1  # [P] §4.1: alpha ~ N(0, 0.1); [C12] colour-noise coefficient 0.1
C12_CROP_CHUNK = 32  # ref §1.3: [C12] draws one crop offset and flip per chunk of 32 images


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor ``t`` on ``device`` without a host synchronisation.

    To a GPU: copied from pinned memory with ``non_blocking``, so the copy is queued on the
    current stream, before the kernels that use it (a pageable copy makes the host wait for the
    stream); the caching host allocator keeps the pinned block until the copy has run. To the
    CPU: ``t`` itself.
    """
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def crop(x: torch.Tensor, top, left, size: int, flip=None) -> torch.Tensor:
    """Per-image ``size`` x ``size`` crops at (top[i], left[i]), mirrored where flip[i].

    ``top``, ``left``, ``flip``: (N,) tensors on one device (the host: one copy to ``x``'s
    device for all three). Returns (N, C, size, size).
    """
    n, dev = x.shape[0], x.device
    draws = [top.long(), left.long()] + ([flip.long()] if flip is not None else [])
    top, left, *mirror = to_device(torch.stack(draws), dev)  # (2 or 3, N): one copy
    ar = torch.arange(size, device=dev)
    rows = top[:, None] + ar  # (N, size)
    cols = left[:, None] + ar  # (N, size)
    if mirror:
        cols = torch.where(mirror[0].bool()[:, None], left[:, None] + (size - 1 - ar), cols)
    idx = torch.arange(n, device=dev)[:, None, None]
    # advanced indices around a slice put the indexed dims first: (N, size, size, C)
    out = x[idx, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def crop_draws(
    n: int, h: int, w: int, size: int, gen: torch.Generator, per_chunk: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top, left, mirror), each (n,) on the CPU: the random crops and flips of ``n`` images.

    ``per_chunk=None`` draws an offset and flip per image (the paper's text); ``per_chunk=32``
    draws one per run of 32 consecutive images, as [C12] does (ref §1.3). Both crop paths (on
    the device: :func:`random_crop_flip`; on the host: :func:`crop_into`) take their draws from
    here, so they cut the same pixels from one generator state.
    """
    if size > h or size > w:
        raise ValueError(f"crop {size} is larger than the {h}x{w} images")
    draws = n if not per_chunk else math.ceil(n / per_chunk)
    top = torch.randint(0, h - size + 1, (draws,), generator=gen)
    left = torch.randint(0, w - size + 1, (draws,), generator=gen)
    mirror = torch.randint(0, 2, (draws,), generator=gen).bool()
    if per_chunk:
        top, left, mirror = (t.repeat_interleave(per_chunk)[:n] for t in (top, left, mirror))
    return top, left, mirror


def random_crop_flip(
    x: torch.Tensor,
    size: int,
    gen: torch.Generator,
    per_chunk: int | None = None,
    flip: bool = True,
) -> torch.Tensor:
    """Random ``size`` crops, each mirrored left-right with p=0.5 when ``flip`` ([P] §4.1).

    Draws as :func:`crop_draws`; they are made whether or not ``flip`` is set, so switching
    flips off does not move the offsets.
    """
    n, _, h, w = x.shape
    top, left, mirror = crop_draws(n, h, w, size, gen, per_chunk)
    return crop(x, top, left, size, mirror if flip else None)


def crop_into(images, rows, top, left, mirror, size: int, out: torch.Tensor) -> None:
    """Host crops in uint8: ``out[k]`` = ``images[rows[k]]`` cut at (top[k], left[k]), mirrored
    left-right where ``mirror[k]``.

    ``images``: (N, H, W, C) uint8 tensor, typically over the store's memory map (see
    :func:`mapped`); ``rows``, ``top``, ``left``, ``mirror``: (n,) integer arrays; ``out``:
    (n, size, size, C) uint8, written in place (a pinned buffer for a GPU). Only the cropped
    rows of each image are read, in file order. torch copies without holding the GIL, so
    several threads crop in parallel; its flip is much faster than numpy's negative-stride copy
    of 3-byte pixels.
    """
    for k in np.argsort(rows, kind="stable"):
        t, s = int(top[k]), int(left[k])
        patch = images[int(rows[k]), t : t + size, s : s + size]
        out[k].copy_(patch.flip(1) if mirror[k] else patch)


def mapped(array: np.ndarray) -> torch.Tensor:
    """A tensor over a read-only array (a memory map), sharing its memory; never written."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        return torch.from_numpy(array)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` patch (ref §3: the single-view test)."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def ten_views(x: torch.Tensor, size: int) -> torch.Tensor:
    """The 10 test views (ref §3): (10, N, C, size, size).

    Order as [C12]'s multiview test: top-left, top-right, centre, bottom-left, bottom-right,
    then the same five mirrored left-right.
    """
    h, w = x.shape[-2:]
    cy, cx, by, bx = (h - size) // 2, (w - size) // 2, h - size, w - size
    starts = ((0, 0), (0, bx), (cy, cx), (by, 0), (by, bx))
    views = [x[..., t : t + size, s : s + size] for t, s in starts]
    views += [v.flip(-1) for v in views]
    return torch.stack(views)


def pca_noise(
    x: torch.Tensor,
    stdevs,
    eigvecs,
    gen: torch.Generator,
    form: str = "paper",
    std: float = COLOUR_NOISE_STD,
) -> torch.Tensor:
    """Add PCA colour noise to RGB images ``x`` (N, 3, H, W) in 0-255 units (ref §1.3, §3).

    ``stdevs``: sqrt(lambda_i) of the RGB covariance in 0-255 units; ``eigvecs``: (3, 3) with
    the eigenvectors p_i as columns. One alpha ~ N(0, ``std``) per image and component.

    - ``paper`` ([P] §4.1): ``x + [p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T`` with the eigenvalues
      l_i of pixels scaled to [0, 1] (the scale of fb.resnet.torch's widely used constants),
      converted back to 0-255: ``255 * V @ (alpha * (stdevs / 255)**2)``.
    - ``code`` ([C12] convdata.py): ``(x + V @ (alpha * stdevs)) / (1 + std)``: the std-devs in
      0-255 units, and the image (already mean-subtracted there) shrunk by 1/1.1 so that the
      training inputs keep the test inputs' overall scale.
    """
    if form not in ("paper", "code"):
        raise ValueError(f"colour noise form {form!r} is not 'paper' or 'code'")
    alpha = torch.randn(x.shape[0], 3, generator=gen, dtype=torch.float64) * std  # (N, 3)
    s = torch.as_tensor(stdevs, dtype=torch.float64)
    v = torch.as_tensor(eigvecs, dtype=torch.float64)
    if form == "paper":
        rgb = 255.0 * (alpha * (s / 255.0) ** 2) @ v.T  # (N, 3) = V @ (alpha * lambda) per image
    else:
        rgb = (alpha * s) @ v.T
    out = x + to_device(rgb.to(x.dtype), x.device)[:, :, None, None]
    return out / (1.0 + std) if form == "code" else out

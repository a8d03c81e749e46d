"""First-layer kernels per tower, and how colour-specific each tower's kernels are.

    alexnet2012 kernels runs/fidelity/imagenet/two_tower-s1 [--out DIR]

[P] §6.1, Fig. 3: "The kernels on GPU 1 are largely color-agnostic, while the kernels on GPU 2
are largely color-specific." Conv1 reads the whole image in both towers but conv2 reads its own
tower only, so a real two-tower run should show the split (ref §4). Writes ``kernels.png``
(tower 0's kernels on top, tower 1's below, each kernel min-max normalised to an RGB tile) and
``kernels.json`` (per-kernel colour scores, per-tower means, the separation) into ``--out``
(default: the run folder).

Colour score of a kernel ``w`` (3, k, k): remove its mean, split every pixel's RGB vector into
the part along the grey axis (1, 1, 1)/sqrt(3) and the rest; score = energy of the rest /
total energy, in [0, 1]: 0 for a grey kernel, 1 for one with no grey component at all (e.g.
red minus green); random i.i.d. weights score about 2/3. For greyscale (1-channel) models the
score is undefined; only the grid is drawn.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alexnet2012.report.stats import mean_std
from alexnet2012.training import checkpoint

CONV1_KEYS = ("conv1.weight", "features.0.weight", "0.weight")  # ours, [TV], streamlined


class KernelError(ValueError):
    """A run folder whose first-layer kernels cannot be read; names the folder."""


def colour_scores(weight: torch.Tensor) -> torch.Tensor:
    """Colour specificity of each kernel of ``weight`` (K, 3, k, k) -> (K,) in [0, 1]."""
    w = weight.detach().double().flatten(2)  # (K, 3, k*k)
    w = w - w.mean(dim=(1, 2), keepdim=True)  # remove the kernel's mean
    grey = w.mean(dim=1, keepdim=True)  # per pixel: projection on (1,1,1)/sqrt(3), as a vector
    total = w.pow(2).sum(dim=(1, 2))
    residual = (w - grey).pow(2).sum(dim=(1, 2))
    score = torch.where(total > 0, residual / total.clamp_min(1e-300), torch.zeros_like(total))
    return score.float()


def colour_score(kernel: torch.Tensor) -> float:
    """Colour specificity of one kernel (3, k, k)."""
    return float(colour_scores(kernel[None])[0])


def tower_summary(scores: torch.Tensor, towers: int) -> dict:
    """Per-tower mean/std of the scores and, for two towers, the separation: the difference of
    means (tower 1 - tower 0) and Cohen's d (that difference / the pooled std)."""
    parts = [p.tolist() for p in scores.chunk(towers)]  # channels [0, C/2) are tower 0
    out = {"per_tower": []}
    for t, part in enumerate(parts):
        m, s = mean_std(part)
        out["per_tower"].append({"tower": t, "kernels": len(part), "mean": m, "std": s})
    if towers == 2:
        (m0, s0), (m1, s1) = mean_std(parts[0]), mean_std(parts[1])
        n0, n1 = len(parts[0]), len(parts[1])
        pooled = math.sqrt(((n0 - 1) * s0**2 + (n1 - 1) * s1**2) / max(n0 + n1 - 2, 1))
        out["difference"] = m1 - m0
        out["cohens_d"] = (m1 - m0) / pooled if pooled > 0 else math.nan
        out["more_colour_specific"] = 1 if m1 > m0 else 0
    return out


def kernel_grid(weight: torch.Tensor, towers: int, cols: int = 16) -> np.ndarray:
    """An image (H, W, 3) of all kernels, each min-max normalised on its own; each tower's
    kernels in rows of ``cols``, tower 0 on top, a wider gap between towers ([P] Fig. 3)."""
    w = weight.detach().float()
    if w.shape[1] == 1:
        w = w.expand(-1, 3, -1, -1)
    elif w.shape[1] != 3:
        w = w[:, :3]  # show the first three input channels
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = ((w - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()  # (K, k, k, 3)
    k, gap = w.shape[1], 1
    cols = max(1, min(cols, math.ceil(len(w) / towers)))
    blocks = []
    for part in np.array_split(w, towers):
        rows = math.ceil(len(part) / cols)
        block = np.ones((rows * (k + gap) - gap, cols * (k + gap) - gap, 3))
        for i, tile in enumerate(part):
            r, c = divmod(i, cols)
            block[r * (k + gap) : r * (k + gap) + k, c * (k + gap) : c * (k + gap) + k] = tile
        blocks.append(block)
    parts = [blocks[0]]
    for block in blocks[1:]:  # a white band between the towers
        parts += [np.ones((3 * gap + 2, block.shape[1], 3)), block]
    return np.concatenate(parts)


def load_conv1(run_dir: str | Path) -> tuple[torch.Tensor, int, dict]:
    """(conv1 weight (K, C, k, k), number of towers, config) from the run's latest checkpoint."""
    payload, path = checkpoint.load_latest_or(run_dir, KernelError)
    state, cfg = payload["model"], payload.get("config", {})
    key = next((k for k in CONV1_KEYS if k in state), None)
    if key is None:
        raise KernelError(f"{path}: no first-layer weight (looked for {', '.join(CONV1_KEYS)})")
    model = cfg.get("model", {})
    towers = 2 if model.get("name", "alexnet2012") == "alexnet2012" and not model.get("half") else 1
    return state[key], towers, cfg


def draw(grid: np.ndarray, path: str | Path, title: str) -> Figure:
    fig = Figure(figsize=(8, 8 * grid.shape[0] / grid.shape[1] + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=120)
    return fig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a run folder with checkpoints")
    p.add_argument("--out", help="output folder (default: the run folder)")


def main(args) -> int:
    weight, towers, _ = load_conv1(args.run)
    out = Path(args.out or args.run)
    out.mkdir(parents=True, exist_ok=True)
    k, c = weight.shape[0], weight.shape[1]
    label = "tower 0 (top) | tower 1 (bottom)" if towers == 2 else "one tower"
    title = f"{args.run}: conv1, {k} kernels {c}x{weight.shape[2]}x{weight.shape[3]}, {label}"
    draw(kernel_grid(weight, towers), out / "kernels.png", title)
    result = {"run": str(args.run), "kernels": k, "in_channels": c, "towers": towers}
    if c != 3:
        result["colour_score"] = f"undefined for {c}-channel input (needs RGB kernels)"
        print(f"{args.run}: {c}-channel conv1; the colour score is undefined, only the grid drawn")
    else:
        scores = colour_scores(weight)
        result.update(tower_summary(scores, towers), scores=[round(v, 6) for v in scores.tolist()])
        for t in result["per_tower"]:
            print(f"tower {t['tower']}: {t['kernels']} kernels, colour score "
                  f"{t['mean']:.3f} ± {t['std']:.3f}")  # fmt: skip
        if towers == 2:
            print(f"separation: tower 1 - tower 0 = {result['difference']:+.3f}, "
                  f"Cohen's d = {result['cohens_d']:+.2f} ([P] Fig. 3: one tower "
                  "colour-agnostic, the other colour-specific)")  # fmt: skip
    (out / "kernels.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out / 'kernels.png'} and {out / 'kernels.json'}")
    return 0

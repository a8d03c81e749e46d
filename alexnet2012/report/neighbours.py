"""Nearest training images of test images in the last hidden layer's feature space.

    alexnet2012 neighbours runs/fidelity/fmnist/two_tower-s1 [--queries 5] [--k 6] [--limit 5000]
    alexnet2012 neighbours RUN_DIR --set data.root=/elsewhere/ilsvrc2012-256  # config overrides

[P] §6.1, Fig. 4 (right): images whose 4096-d last-hidden-layer vectors are close in Euclidean
distance look alike to the network. The features are fc7's output after its ReLU and before
dropout (eval mode, so dropout is off anyway); for the baselines, the ReLU after the
penultimate Linear. Queries are the first ``--queries`` test images (centre view); the search
set is ``--limit`` training images spread evenly over the training set, centre view, no
augmentation. Writes ``neighbours.png`` (a row per query: the query, then its ``--k``
nearest) and ``neighbours.json`` into ``--out`` (default: the run folder).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from alexnet2012.config import from_dict, load_config
from alexnet2012.data import build_data
from alexnet2012.nets.build import build_model, input_size
from alexnet2012.nets.model import AlexNet2012
from alexnet2012.parallel.execution import Execution
from alexnet2012.training import checkpoint
from alexnet2012.training.progress import progress

log = logging.getLogger(__name__)


class NeighbourError(ValueError):
    """A run or request the neighbour search cannot serve; says what to change."""


@torch.no_grad()
def nearest(query_feats: torch.Tensor, bank_feats: torch.Tensor, k: int, chunk: int = 8192):
    """Exact (brute-force) k nearest rows of ``bank_feats`` (M, D) for each row of
    ``query_feats`` (Q, D) by Euclidean distance -> (indices (Q, k), distances (Q, k)),
    nearest first. Ranked in float64 chunk by chunk; the returned distances are recomputed
    directly as ||q - b||."""
    if not 0 < k <= len(bank_feats):
        raise NeighbourError(
            f"k={k} neighbours asked for, but the search set has {len(bank_feats)}"
        )
    q, b = query_feats.double(), bank_feats.double()
    qq = q.pow(2).sum(1, keepdim=True)
    best_d = torch.full((len(q), 0), float("inf"), dtype=torch.float64)
    best_i = torch.zeros((len(q), 0), dtype=torch.long)
    for lo in range(0, len(b), chunk):
        part = b[lo : lo + chunk]
        d2 = (qq + part.pow(2).sum(1)[None] - 2 * q @ part.T).clamp_min(0)  # (Q, chunk)
        idx = torch.arange(lo, lo + len(part)).expand(len(q), -1)
        d2, idx = torch.cat([best_d, d2], 1), torch.cat([best_i, idx], 1)
        best_d, pos = d2.topk(min(k, d2.shape[1]), dim=1, largest=False, sorted=True)
        best_i = idx.gather(1, pos)
    dist = (q[:, None, :] - b[best_i]).norm(dim=-1)
    return best_i, dist.to(query_feats.dtype if query_feats.is_floating_point() else torch.float)


def feature_layer(model: nn.Module) -> nn.Module:
    """The module whose output is the last hidden layer's features (fc7 after ReLU)."""
    if isinstance(model, AlexNet2012):
        return model.fc7.post[0]  # ReLU; [1] is the tower dropout ([P] §4.2)
    mods = list(model.modules())
    linears = [i for i, m in enumerate(mods) if isinstance(m, nn.Linear)]
    relus = (
        [m for m in mods[linears[-2] + 1 :] if isinstance(m, nn.ReLU)] if len(linears) > 1 else []
    )
    if not relus:
        raise NeighbourError(f"{type(model).__name__}: no ReLU after a penultimate Linear layer")
    return relus[0]


@torch.no_grad()
def features(model: nn.Module, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D) float32 on the CPU, labels (N,)) over ``batches`` of (x, y)."""
    captured, labels = [], []
    hook = feature_layer(model).register_forward_hook(
        lambda _m, _i, out: captured.append(out.detach().flatten(1).float().cpu().clone())
    )
    try:
        for x, y in batches:
            model(x)
            labels.append(y.cpu())
    finally:
        hook.remove()
    return torch.cat(captured), torch.cat(labels)


def _views(data, split: str, idx: torch.Tensor, batch: int):
    """Centre views (no augmentation) of images ``idx`` of ``split``, in batches (a progress
    bar at a terminal)."""
    bar = progress(True, -(-len(idx) // batch), 0, unit="batch")
    for lo in range(0, len(idx), batch):
        x, y = data._fetch(split, idx[lo : lo + batch])
        bar.update(1)
        yield data._views(x, False), y
    bar.close()


def _display(data, x: torch.Tensor) -> np.ndarray:
    """(N, C, S, S) model inputs -> (N, S, S, 3) in [0, 1] for drawing."""
    x = x.float()
    mean = getattr(data, "mean_patch", None)
    if mean is not None and getattr(data, "pixels", "") == "c12":
        x = ((x + mean) / 255).clamp(0, 1)  # undo the mean-image subtraction (ref §3)
    else:  # per-image min-max
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-12)
    return x.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).cpu().numpy()


def load(run_dir: str | Path, overrides=(), device: str = "cpu"):
    """(model in eval mode, data) of the run's config and latest checkpoint, one process."""
    payload, path = checkpoint.load_latest_or(run_dir, NeighbourError)
    saved = Path(run_dir) / "config.yaml"
    if saved.is_file():
        cfg = load_config(saved, list(overrides))
    elif overrides:
        raise NeighbourError(f"{run_dir}: no config.yaml to apply the overrides to")
    else:
        cfg = from_dict(payload["config"])
    data = build_data(cfg, input_size(cfg), device)
    model = build_model(cfg, data.num_classes, data.in_channels)
    Execution(model).load_canonical(payload["model"])
    log.info("loaded %s", path)
    return model.to(device).eval(), data


def draw(rows: list[np.ndarray], titles: list[list[str]], path: str | Path) -> Figure:
    """A grid: one row per query, the query image first, then its neighbours."""
    cols = len(rows[0])
    fig = Figure(figsize=(1.5 * cols, 1.7 * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    for r, (images, names) in enumerate(zip(rows, titles, strict=True)):
        for c, (image, name) in enumerate(zip(images, names, strict=True)):
            ax = fig.add_subplot(len(rows), cols, r * cols + c + 1)
            ax.imshow(image, interpolation="bilinear")
            ax.set_title(name, fontsize=7, color="black" if c else "tab:red")
            ax.set_axis_off()
    fig.savefig(path, dpi=110)
    return fig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a run folder with checkpoints")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. data.root=/elsewhere/store")  # fmt: skip
    p.add_argument("--out", help="output folder (default: the run folder)")
    p.add_argument("--queries", type=int, default=5, help="test images to search for")
    p.add_argument("--k", type=int, default=6, help="neighbours per query")
    p.add_argument("--limit", type=int, default=5000, help="training images searched")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def search(model, data, queries: int, limit: int, k: int, batch: int = 128) -> dict:
    """Features of the first ``queries`` test images and ``limit`` evenly spread training
    images; each query's ``k`` nearest training images: indices, labels, distances."""
    q_idx = torch.arange(min(queries, data.test_size))
    bank = torch.linspace(0, data.train_size - 1, min(limit, data.train_size)).long()
    q_feats, q_labels = features(model, _views(data, "test", q_idx, batch))
    b_feats, b_labels = features(model, _views(data, "train", bank, batch))
    idx, dist = nearest(q_feats, b_feats, k)
    return {
        "feature_dim": q_feats.shape[1],
        "searched": len(bank),
        "same_label_share": float((b_labels[idx] == q_labels[:, None]).float().mean()),
        "queries": [
            {
                "query": int(q),
                "label": data.classes[q_labels[i]],
                "train_index": bank[idx[i]].tolist(),
                "labels": [data.classes[b_labels[j]] for j in idx[i]],
                "distances": dist[i].tolist(),
            }
            for i, q in enumerate(q_idx)
        ],
    }


def main(args) -> int:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.queries < 1 or args.limit < 1:
        raise NeighbourError("--queries and --limit must be at least 1")
    model, data = load(args.run, args.overrides, device)
    result = search(model, data, args.queries, args.limit, args.k, args.batch_size)
    rows, titles = [], []
    for q in result["queries"]:
        x_q, _ = data._fetch("test", torch.tensor([q["query"]]))
        x_n, _ = data._fetch("train", torch.tensor(q["train_index"]))
        rows.append(
            list(_display(data, torch.cat([data._views(x_q, False), data._views(x_n, False)])))
        )
        pairs = zip(q["labels"], q["distances"], strict=True)
        titles.append([f"query: {q['label']}", *(f"{n}\nd={d:.3g}" for n, d in pairs)])
    out = Path(args.out or args.run)
    out.mkdir(parents=True, exist_ok=True)
    draw(rows, titles, out / "neighbours.png")
    (out / "neighbours.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{len(rows)} queries, {args.k} nearest of {result['searched']} training images in the "
          f"{result['feature_dim']}-d last hidden layer; {result['same_label_share']:.0%} share "
          "the query's label")  # fmt: skip
    print(f"wrote {out / 'neighbours.png'} and {out / 'neighbours.json'}")
    return 0

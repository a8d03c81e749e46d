"""The comparison plots, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each function saves a PNG and returns its :class:`~matplotlib.figure.Figure`, so callers (and
tests) can inspect what was drawn, e.g. ``len(fig.axes[0].lines)``.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alexnet2012.report.runs import Run

MIB = 2**20


def _figure(width: float, height: float, cols: int) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, cols, i + 1) for i in range(cols)]


def _seen(run: Run) -> dict[int, float] | None:
    """Step -> images seen, from the rows that log ``images_seen`` (None when none do)."""
    seen = {r["step"]: r["images_seen"] for r in run.metrics if "images_seen" in r and "step" in r}
    return seen or None


def curves(runs: list[Run], path: str | Path) -> Figure:
    """``train/loss`` (left) and ``val/top1_err`` in % (right) of every run against the images
    seen (runs of other batch sizes line up), or against the step when a run does not log them;
    one line per run on each axis; runs without the metric still get an (empty) line so the
    colours match across the two axes."""
    fig, (loss_ax, err_ax) = _figure(11, 4.2, 2)
    seen = [_seen(run) for run in runs]
    by_images = bool(runs) and all(s is not None for s in seen)
    for run, images in zip(runs, seen, strict=True):
        steps, loss = run.series("train/loss")
        xs = [images.get(k, k) for k in steps] if by_images else steps
        (line,) = loss_ax.plot(xs, loss, label=run.name, lw=1.2)
        steps, err = run.series("val/top1_err")
        xs = [images.get(k, k) for k in steps] if by_images else steps
        err_ax.plot(xs, [e * 100 for e in err], marker="o", ms=3, color=line.get_color())
    x = "images seen" if by_images else "step"
    loss_ax.set(xlabel=x, ylabel="training loss", title="train/loss")
    err_ax.set(xlabel=x, ylabel="top-1 error (%)", title="val/top1_err")
    for ax in (loss_ax, err_ax):
        ax.grid(alpha=0.3)
    if runs:
        loss_ax.legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=110)
    return fig


def throughput(runs: list[Run], path: str | Path) -> Figure:
    """Training images/s per run (left) and peak memory per rank in MiB (right, one bar per
    rank side by side)."""
    fig, (speed_ax, mem_ax) = _figure(11, 4.2, 2)
    names = [r.name for r in runs]
    xs = list(range(len(runs)))
    speed_ax.bar(xs, [r.summary.get("images_per_s", 0) for r in runs], color="tab:blue")
    speed_ax.set(ylabel="images / s", title="training throughput")
    ranks = max((len(r.summary.get("peak_memory_per_rank", [])) for r in runs), default=1) or 1
    width = 0.8 / ranks
    for k in range(ranks):
        mem = [_rank_value(r.summary.get("peak_memory_per_rank", []), k) / MIB for r in runs]
        offset = (k - (ranks - 1) / 2) * width
        mem_ax.bar([x + offset for x in xs], mem, width, label=f"rank {k}")
    mem_ax.set(ylabel="MiB", title="peak memory per rank")
    if ranks > 1:
        mem_ax.legend(fontsize=7)
    for ax in (speed_ax, mem_ax):
        ax.set_xticks(xs, names, rotation=30, ha="right", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=110)
    return fig


def _rank_value(values: list, k: int) -> float:
    return float(values[k]) if k < len(values) else 0.0

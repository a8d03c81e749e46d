"""Time to accuracy: the images and the seconds a run needed to reach a validation accuracy.

A run reaches accuracy ``a`` at its first validation with ``val/top1_err <= 1 - a``; the images
are that row's ``images_seen``, the seconds its training steps' time up to that step: the sum of
``train/step_time_s`` times the steps of each logged window (validation, checkpoints and start-up
excluded; the loop flushes its window before every end-of-epoch validation).
"""

from __future__ import annotations

import math

from alexnet2012.report.runs import Group, Run
from alexnet2012.report.stats import pm

TARGETS = (0.85, 0.90)  # validation accuracy; d2l's runs end near 0.88 (ref §5)


def training_seconds(run: Run) -> dict[int, float]:
    """Step -> seconds of training steps up to it, from the logged step times."""
    rows = sorted((r["step"], r["train/step_time_s"]) for r in run.metrics
                  if "train/step_time_s" in r and "step" in r)  # fmt: skip
    out, total, last = {}, 0.0, 0
    for step, step_s in rows:
        if step <= last:
            continue  # a resumed run may log a step twice
        total += (step - last) * step_s
        out[step], last = total, step
    return out


def reach(run: Run, accuracy: float) -> tuple[float, float] | None:
    """(images seen, training seconds) at the first validation at ``accuracy`` or better."""
    clock = training_seconds(run)
    for row in sorted((r for r in run.metrics if "val/top1_err" in r and "step" in r),
                      key=lambda r: r["step"]):  # fmt: skip
        if row["val/top1_err"] <= 1 - accuracy + 1e-12:
            step = row["step"]
            done = [s for s in clock if s <= step]
            seconds = clock[max(done)] if done else math.nan
            return float(row.get("images_seen", math.nan)), seconds
    return None


def _cells(run: Run) -> list[str]:
    cells = []
    for a in TARGETS:
        hit = reach(run, a)
        if hit is None:
            cells += ["not reached", "-"]
        else:
            images, seconds = hit
            cells += ["-" if math.isnan(images) else f"{images:,.0f}",
                      "-" if math.isnan(seconds) else f"{seconds:.1f}"]  # fmt: skip
    return cells


def _final(run: Run) -> str:
    errs = run.series("val/top1_err")[1]
    return f"{100 * (1 - errs[-1]):.2f}" if errs else "-"


def reach_section(runs: list[Run], groups: list[Group]) -> list[str]:
    """The Markdown section: one row per run, then per group of seeds mean ± std of those that
    reached each accuracy (how many did, of how many)."""
    heads = []
    for a in TARGETS:
        heads += [f"images to {100 * a:.0f}%", f"s to {100 * a:.0f}%"]
    out = ["## Time to accuracy", "",
           "Validation accuracy reached first after how many training images and seconds of "
           "training steps (validation and start-up excluded), next to the final validation "
           "accuracy. Seconds are the run's own machine's.", "",
           "| run | " + " | ".join(heads) + " | final val acc % | test acc % |",
           "|" + "---|" * (len(heads) + 3)]  # fmt: skip
    for r in runs:
        test = r.summary.get("test/top1_err")
        acc = "-" if test is None else f"{100 * (1 - test):.2f}"
        out.append(f"| {r.name} | " + " | ".join(_cells(r)) + f" | {_final(r)} | {acc} |")
    if not any(len(g.runs) > 1 for g in groups):
        return out
    out += ["", "| group | " + " | ".join(heads) + " |", "|" + "---|" * (len(heads) + 1)]
    for g in groups:
        cells = []
        for a in TARGETS:
            hits = [h for h in (reach(r, a) for r in g.runs) if h is not None]
            count = f" ({len(hits)} of {len(g.runs)})" if len(hits) < len(g.runs) else ""
            cells += [pm([h[0] for h in hits], digits=0) + count,
                      pm([h[1] for h in hits], digits=1) + count]  # fmt: skip
        out.append(f"| {g.name} | " + " | ".join(cells) + " |")
    return out

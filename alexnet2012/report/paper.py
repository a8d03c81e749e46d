"""The paper's ablation claims next to what these runs measured ([P] §3.3-§4.2, ref §4).

An ablation pair is two groups of runs whose configs differ in exactly one of the keys in
:data:`CLAIMS`, one side being the paper's full model. The measured reduction is the ablated
group's mean error minus the full group's, in percentage points (positive: the paper's choice
helps), judged against seed noise with :func:`.stats.verdict`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from alexnet2012.config import PAPER_CROSS, Config
from alexnet2012.nets.build import input_size
from alexnet2012.nets.model import FULL_WIDTHS, PRESETS
from alexnet2012.report.runs import Group, config_diff
from alexnet2012.report.stats import NOISE_RULE, verdict

PAPER_SCALE = (
    "ILSVRC, 1000 classes, 224x224x3 input, widths " + "/".join(map(str, FULL_WIDTHS))
    + ", ~90 epochs ([P] §5). The two-tower vs half-net numbers are ILSVRC-2010 test, 10 views "
    "([C12] layers-145*.cfg training notes); [P] does not say which split and views the other "
    "ablations used"
)  # fmt: skip


@dataclass(frozen=True)
class Claim:
    """One ablation of the paper: the config key it turns and the error reduction claimed."""

    key: str
    title: str
    full: Callable[[object], bool]  # is this value of ``key`` the paper's choice?
    top1: str
    top5: str
    source: str


def _is(value):
    return lambda v: v == value


CLAIMS = [
    Claim("model.half", "two towers vs the one-column half net", _is(False), "1.7", "1.2",
          "[P] §3.5, [C12] layers-145-half.cfg"),
    Claim("model.lrn", "local response normalisation", _is(True), "1.4", "1.2", "[P] §3.3"),
    Claim("model.overlap_pool", "overlapping pooling 3/2 vs 2/2", _is(True), "0.4", "0.3",
          "[P] §3.4"),
    Claim("data.colour_noise", "PCA colour noise", lambda v: v != "none", "over 1", "-",
          "[P] §4.1"),
    Claim("model.dropout", "dropout 0.5 in fc6, fc7", lambda v: v != "none",
          "- (less overfitting; ~2x iterations)", "-", "[P] §4.2"),
    Claim("model.preset", "the 2012 code vs the paper's text", _is("original"),
          "- (same net in [P])", "-", "[C12] layers-145.cfg vs [P]"),
    Claim("model.cross", "which layers cross towers", _is(tuple(PAPER_CROSS)),
          "- (chosen by cross-validation)", "-", "[P] §3.5"),
]  # fmt: skip
BY_KEY = {c.key: c for c in CLAIMS}


def _errors(group: Group, metric: str) -> list[float]:
    return [r.summary[metric] * 100 for r in group.runs if metric in r.summary]


def _views(full: Group, ablated: Group) -> str:
    """``test10`` when every run of both groups has 10-view numbers (as the paper's), else
    ``test`` (centre crop)."""
    runs = full.runs + ablated.runs
    return "test10" if all("test10/top1_err" in r.summary for r in runs) else "test"


def _input_size(config: dict) -> int:
    """The input size the run of a (flattened) group config trained at (nets/build.py's rule;
    224, the default preset's, for a config that names no preset this version knows)."""
    cfg = Config()
    m = cfg.model
    m.name, m.preset = config.get("model.name", m.name), config.get("model.preset", m.preset)
    m.input_size = config.get("model.input_size") or 0
    if m.preset not in PRESETS:  # a run from W&B or an older version
        m.preset = Config().model.preset
    return input_size(cfg)


def scale(config: dict) -> str:
    """Data set and scale of a (flattened) group config, in words."""
    name = config.get("data.name", "?")
    train, test = config.get("data.train_subset") or "all", config.get("data.test_subset") or "all"
    if name == "imagefolder":
        name = f"imagefolder {config.get('data.root') or '?'}"
    if name == "synthetic":
        data = f"synthetic ({config.get('data.synthetic_size', '?')} training images)"
    else:
        data = f"{name} ({train} train / {test} test images)"
    size = _input_size(config)
    widths = config.get("model.widths") or FULL_WIDTHS
    steps = config.get("train.max_steps")
    length = f"{config.get('train.epochs', '?')} epoch(s)"
    length += f", max {steps} steps" if steps else ""
    return f"{data}, {size}x{size} input, widths {'/'.join(map(str, widths))}, {length}"


def _show(value) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


def ablation_rows(groups: list[Group]) -> list[dict]:
    """One row per ablation pair found among ``groups``."""
    rows = []
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            diff = config_diff(a.config, b.config)
            if len(diff) != 1:
                continue
            ((key, (va, vb)),) = diff.items()
            claim = BY_KEY.get(key)
            if claim is None or claim.full(va) == claim.full(vb):
                continue
            full, ablated = (a, b) if claim.full(va) else (b, a)
            views = _views(full, ablated)
            measured = {}
            for k in ("top1", "top5"):
                metric = f"{views}/{k}_err"
                measured[k] = verdict(_errors(ablated, metric), _errors(full, metric))
            rows.append({
                "claim": claim, "full": full, "ablated": ablated, "views": views,
                "full_value": _show(full.config.get(key)),
                "ablated_value": _show(ablated.config.get(key)), "measured": measured,
                "scale": scale(full.config),
            })  # fmt: skip
    return rows


def _cell(v) -> str:
    diff, two_se, word = v
    noise = "" if math.isnan(two_se) else f" (2SE {two_se:.2f})"
    return f"{diff:+.2f}{noise}, {word}"


def paper_section(groups: list[Group]) -> str:
    """The Markdown "paper versus this run" section."""
    rows = ablation_rows(groups)
    out = ["## Paper versus this run", "", f"Paper: {PAPER_SCALE}.", ""]
    if not rows:
        keys = ", ".join(c.key for c in CLAIMS)
        return "\n".join([*out, f"No ablation pairs here (groups that differ only in {keys})."])
    for s in dict.fromkeys(r["scale"] for r in rows):
        out.append(f"This run: {s}.")
    out += [
        "",
        "Error reduction = error without the paper's choice minus error with it, in points "
        "(positive: the choice helps). Measured: mean over seeds, centre crop (`test`) or 10 "
        f"views (`test10`). Noise: {NOISE_RULE}",
        "",
        "| ablation | key: paper / ablated | paper top-1 / top-5 | measured top-1 | "
        "measured top-5 | groups (seeds) | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, m = r["claim"], r["measured"]
        seeds = f"{r['full'].name} ({len(r['full'].runs)}) vs {r['ablated'].name} "
        seeds += f"({len(r['ablated'].runs)}), {r['views']}"
        out.append(
            f"| {c.title} | {c.key}: {r['full_value']} / {r['ablated_value']} | "
            f"{c.top1} / {c.top5} | {_cell(m['top1'])} | {_cell(m['top5'])} | {seeds} | "
            f"{c.source} |"
        )
    return "\n".join(out)

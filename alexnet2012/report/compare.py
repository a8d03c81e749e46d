"""Compare finished runs: one table, seed groups with their noise, plots, the paper's claims.

    alexnet2012 compare runs/a-s1 runs/a-s2 runs/b-s1 --out runs/report
    alexnet2012 compare runs/fidelity/fmnist/*-s* --paper --out runs/fidelity/fmnist/report
    alexnet2012 compare --wandb my-team/alexnet2012 --out runs/wandb-report

Writes ``report.md`` (the tables: runs, seed groups, net against recipe for groups named
``NET@RECIPE``, the paper's ablations with ``--paper``, time to 85% and 90% validation accuracy),
``curves.png`` (training loss and validation top-1 error of every run against the images seen)
and ``throughput.png`` (images/s, peak memory per rank) into ``--out`` (default: ``report`` next
to the first run folder) and prints the run table. Runs whose configs differ only in the seed
form a group, reported as mean ± std over seeds. When W&B is on for the compared runs, the
report is also a W&B run of job type ``report`` (:mod:`.wandb_report`).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from alexnet2012.report import plots
from alexnet2012.report.grid import grid_section
from alexnet2012.report.paper import paper_section
from alexnet2012.report.reach import reach_section
from alexnet2012.report.runs import Group, Run, RunError, group_runs, load_runs
from alexnet2012.report.stats import NOISE_RULE, pm, verdict
from alexnet2012.report.wandb_report import log_report

log = logging.getLogger(__name__)

MIB, MB = 2**20, 1e6


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run folders written by train")
    p.add_argument("--out", help="output folder (default: report/ next to the first run)")
    p.add_argument("--paper", action="store_true", help="add the paper-versus-this-run table")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also pull the runs of a W&B project")


def _pct(summary: dict, key: str) -> str:
    return f"{summary[key] * 100:.2f}" if key in summary else "-"


def _per_rank(values, scale: float = 1.0, fmt: str = "{:,.0f}") -> str:
    if not isinstance(values, list) or not values:
        return "-"
    return " / ".join(fmt.format(v / scale) for v in values)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _has_ten_view(runs: list[Run]) -> bool:
    return any("test10/top1_err" in r.summary for r in runs)


def run_table(runs: list[Run]) -> list[str]:
    """The per-run Markdown table; errors in %, memory in MiB, exchanges in MB (10^6 bytes)."""
    ten = _has_ten_view(runs)
    header = ["run", "model", "preset", "world size", "accuracy %", "top-1 err %", "top-5 err %"]
    header += ["test loss"]
    header += ["10-view top-1 %", "10-view top-5 %"] if ten else []
    header += ["wall s", "images/s", "params per rank", "peak MiB per rank", "MB exchanged/step"]
    rows = []
    for r in runs:
        s, m = r.summary, r.config.get("model", {})
        model = str(s.get("model", m.get("name", "-")))
        preset = str(s.get("preset", m.get("preset", "-"))) if model == "alexnet2012" else "-"
        acc = f"{100 * (1 - s['test/top1_err']):.2f}" if "test/top1_err" in s else "-"
        loss = f"{s['test/loss']:.4f}" if "test/loss" in s else "-"
        row = [r.name, model, preset, str(s.get("world_size", "-")), acc,
               _pct(s, "test/top1_err"), _pct(s, "test/top5_err"), loss]  # fmt: skip
        if ten:
            row += [_pct(s, "test10/top1_err"), _pct(s, "test10/top5_err")]
        row += [
            f"{s['wall_s']:.1f}" if "wall_s" in s else "-",
            f"{s['images_per_s']:.1f}" if "images_per_s" in s else "-",
            _per_rank(s.get("params_per_rank")),
            _per_rank(s.get("peak_memory_per_rank"), MIB),
            f"{s['bytes_exchanged_per_step'] / MB:.3f}" if "bytes_exchanged_per_step" in s else "-",
        ]
        rows.append(row)
    return _table(header, rows)


def _values(group: Group, key: str) -> list[float]:
    return [r.summary[key] for r in group.runs if key in r.summary]


def group_section(groups: list[Group], ten: bool) -> list[str]:
    """Mean ± std over seeds per group, then which group differences exceed the noise."""
    metrics = ["test/top1_err", "test/top5_err"] + (["test10/top1_err"] if ten else [])
    labels = {"test/top1_err": "top-1 %", "test/top5_err": "top-5 %"}
    labels["test10/top1_err"] = "10-view top-1 %"
    header = ["group", "runs", "seeds", *(labels[k] for k in metrics), "images/s"]
    rows = []
    for g in groups:
        seeds = ", ".join(str(r.seed) for r in g.runs)
        cells = [pm(_values(g, k), 100) for k in metrics]
        rows.append([g.name, str(len(g.runs)), seeds, *cells, pm(_values(g, "images_per_s"))])
    out = ["## Groups: mean ± std over seeds", "", *_table(header, rows)]
    if len(groups) < 2:
        return out
    out += ["", "### Differences between groups", "", NOISE_RULE, ""]
    pairs = []
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            row = [a.name, b.name]
            for key in ("test/top1_err", "test/top5_err"):
                diff, two_se, word = verdict(
                    [v * 100 for v in _values(a, key)], [v * 100 for v in _values(b, key)]
                )
                row += [f"{diff:+.2f}", "-" if math.isnan(two_se) else f"{two_se:.2f}", word]
            pairs.append(row)
    header = ["A", "B", "top-1 A-B (points)", "2 x SE", "top-1", "top-5 A-B", "2 x SE", "top-5"]
    return out + _table(header, pairs)


def build_report(runs: list[Run], out: str | Path, paper: bool = False) -> dict:
    """Write ``report.md``, ``curves.png`` and ``throughput.png`` into ``out``.

    Returns the paths, the run table's lines and the two figures (for inspection)."""
    if not runs:
        raise RunError("no runs to compare: give run folders or --wandb ENTITY/PROJECT")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"--out {out}: cannot make the report folder there ({e.strerror})") from None
    groups = group_runs(runs)
    table = run_table(runs)
    text = ["# Run comparison", "", f"{len(runs)} runs in {len(groups)} groups.", "", *table]
    text += ["", *group_section(groups, _has_ten_view(runs))]
    grid = grid_section(groups)  # groups named NET@RECIPE
    text += ["", *grid] if grid else []
    if paper:
        text += ["", paper_section(groups)]
    text += ["", *reach_section(runs, groups)]
    text += ["", "![curves](curves.png)", "", "![throughput](throughput.png)", ""]
    (out / "report.md").write_text("\n".join(text))
    figs = {
        "curves": plots.curves(runs, out / "curves.png"),
        "throughput": plots.throughput(runs, out / "throughput.png"),
    }
    log.info("wrote %s", out / "report.md")
    return {"report": out / "report.md", "table": table, "figures": figs, "groups": groups}


def wandb_runs(project: str) -> list[Run]:
    """The runs of W&B project ``ENTITY/PROJECT`` (config, history, summary) via the public API."""
    if project.count("/") != 1 or not all(project.split("/")):
        raise RunError(f"--wandb {project!r}: give ENTITY/PROJECT, e.g. my-team/alexnet2012")
    try:
        import wandb
    except ImportError:
        raise RunError(
            "--wandb needs the wandb package (pip install wandb); or compare local run folders"
        ) from None
    try:
        found = list(wandb.Api(timeout=30).runs(project))
        runs = []
        for r in found:
            rows = [row for row in r.scan_history() if "_step" in row]
            metrics = [
                {"step": row["_step"], **{k: v for k, v in row.items() if k[0] != "_"}}
                for row in rows
            ]
            summary = {k: v for k, v in r.summary_metrics.items() if not k.startswith("_")}
            runs.append(Run(r.name, f"wandb:{project}/{r.id}", dict(r.config), metrics, summary))
    except Exception as e:  # no key, offline, no such project: one clear error
        raise RunError(
            f"--wandb {project}: cannot read the runs ({type(e).__name__}: {e}); check the "
            "name, `wandb login` and the network, or compare local run folders"
        ) from None
    if not runs:
        raise RunError(f"--wandb {project}: the project has no runs")
    return runs


def main(args) -> int:
    runs = load_runs(args.runs)
    if args.wandb:
        runs += wandb_runs(args.wandb)
    out = args.out or (Path(args.runs[0]).parent / "report" if args.runs else Path("report"))
    result = build_report(runs, out, paper=args.paper)
    wandb_id = log_report(runs, result, out)
    print("\n".join(result["table"]))
    if wandb_id:
        print(f"W&B report run {wandb_id} (job type report) in {Path(out) / 'wandb'}")
    print(f"\nwrote {result['report']}, curves.png and throughput.png in {Path(out)}")
    return 0

"""The full-size commands: launch/fullsize.sh (net against recipe) and launch/fidelity.sh fullsize
(the paper's ablations), end to end on the CPU at a tiny budget; their configs, the time estimate
they print first, and the report's net-against-recipe and time-to-accuracy tables."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alexnet2012.config import load_config, to_dict
from alexnet2012.report import estimate
from alexnet2012.report.grid import grid_section
from alexnet2012.report.reach import reach, reach_section
from alexnet2012.report.runs import Group, Run, flatten

ROOT = Path(__file__).resolve().parents[2]
GRID = {"two_tower@2012": "configs/fashion_mnist_2012.yaml",
        "two_tower@d2l": "configs/fashion_mnist_d2l_two_tower.yaml",
        "streamlined@2012": "configs/fashion_mnist_2012_streamlined.yaml",
        "streamlined@d2l": "configs/fashion_mnist_d2l_xavier.yaml"}  # fmt: skip
ABLATIONS = ("two_tower", "half", "no_lrn", "no_overlap", "no_dropout")
# debug-sized: synthetic images, narrow layers, 79x79 (the streamlined net's smallest), 2 steps
TINY = ("data.name=synthetic data.synthetic_size=64 data.val_size=16 model.input_size=79 "
        "model.widths=[16,32,48,48,32,64,64] train.batch_size=8 train.max_steps=2 "
        "train.log_every=1 wandb.mode=disabled")  # fmt: skip


def _flat(path: str) -> dict:
    flat = flatten(to_dict(load_config(path)))
    return {k: v for k, v in flat.items() if not k.startswith(("run.", "wandb."))}


def _diff(a: str, b: str) -> set[str]:
    fa, fb = _flat(a), _flat(b)
    return {k for k in fa if fa[k] != fb[k]}


def test_grid_configs_change_the_net_or_the_recipe():
    """Within a recipe only the net (and the init and input scale it learns from) changes;
    within the streamlined row only the recipe; the two-tower net keeps its preset."""
    net = {"model.name", "model.init", "data.pixels"}
    assert _diff(GRID["two_tower@2012"], GRID["streamlined@2012"]) == net
    assert _diff(GRID["two_tower@d2l"], GRID["streamlined@d2l"]) == {"model.name", "model.init"}
    recipe = {"train.momentum", "train.weight_decay", "train.bias_lr_mult", "train.update",
              "train.schedule", "train.plateau_patience", "data.flip"}  # fmt: skip
    assert _diff(GRID["streamlined@2012"], GRID["streamlined@d2l"]) == recipe
    assert _diff(GRID["two_tower@2012"], GRID["two_tower@d2l"]) == recipe | {
        "model.init", "data.pixels"}  # fmt: skip
    d2l = _flat(GRID["two_tower@d2l"])
    assert (d2l["train.lr"], d2l["train.batch_size"], d2l["train.epochs"]) == (0.01, 128, 10)
    assert (d2l["data.pixels"], d2l["model.preset"], d2l["model.init"]) == (
        "unit", "original", "kaiming")  # fmt: skip


def test_estimate_of_the_shipped_commands_fits_twelve_minutes():
    """The 2x2 at two seeds and the five ablations at two seeds, at the H200's measured rates."""
    grid = [f"{c} seed={s}" for c in GRID.values() for s in (1, 2)]
    text = estimate.estimate(grid, estimate.MEASURED, budget_s=720)
    # 2 x (122 + 122 + 48 + 48) s of runs and 5 s of report
    assert "estimate: 8 runs and 1 report(s), 685 s (11.4 min): within the budget" in text
    ablations = [f"configs/fidelity/fullsize_{v}.yaml seed={s}" for v in ABLATIONS for s in (1, 2)]
    text = estimate.estimate(ablations, estimate.MEASURED, budget_s=720)
    assert "249,600 images at 4,461 img/s with validation, 10 s start" in text
    assert re.search(r"10 runs and 1 report\(s\), 665 s \(11.1 min\): within", text), text
    longer = estimate.estimate([f"{a} train.epochs=10" for a in ablations], estimate.MEASURED, 720)
    assert "OVER the budget of 12 min" in longer
    half = estimate.parse_rates(["alexnet2012=2697.15"])  # a GPU at half the H200's speed
    slow = estimate.estimate([GRID["two_tower@2012"]], half)
    assert ": 234 s (" in slow and "499,200 images at 2,231 img/s" in slow
    assert estimate.main(["configs/fashion_mnist_2012.yaml", "model.nope=1"]) == 2


def _run(name: str, rows: list[dict], err: float = 0.2) -> Run:
    return Run(name, name, {"seed": 1}, rows, {"test/top1_err": err})


def test_reach_counts_images_and_training_seconds():
    rows = [{"step": 10, "train/step_time_s": 0.5, "images_seen": 1280},
            {"step": 20, "train/step_time_s": 0.25, "images_seen": 2560},
            {"step": 20, "val/top1_err": 0.16, "images_seen": 2560},
            {"step": 30, "train/step_time_s": 0.5, "images_seen": 3840},
            {"step": 30, "val/top1_err": 0.15, "images_seen": 3840},
            {"step": 40, "train/step_time_s": 1.0, "images_seen": 5120},
            {"step": 40, "val/top1_err": 0.09, "images_seen": 5120}]  # fmt: skip
    run = _run("a-s1", rows)
    assert reach(run, 0.85) == (3840, 10 * 0.5 + 10 * 0.25 + 10 * 0.5)
    assert reach(run, 0.90) == (5120, 22.5)
    assert reach(run, 0.95) is None
    text = "\n".join(reach_section([run], [Group("a", [run], {})]))
    assert "| a-s1 | 3,840 | 12.5 | 5,120 | 22.5 | 91.00 | 80.00 |" in text


def test_grid_lays_out_net_against_recipe():
    def group(name, errs):
        return Group(name, [_run(f"{name}-s{i}", [], e) for i, e in enumerate(errs)], {})

    groups = [group("tt@2012", [0.08, 0.09]), group("tt@d2l", [0.12, 0.13]),
              group("sl@2012", [0.10]), group("other", [0.5])]  # fmt: skip
    text = "\n".join(grid_section(groups))
    assert "| net \\ recipe | 2012 | d2l |" in text
    assert "| tt | 8.50 ± 0.71 (2) | 12.50 ± 0.71 (2) |" in text
    assert "| sl | 10.00 (1) | - |" in text
    assert "| net, 2012 recipe | tt@2012 | sl@2012 | -1.50 | 1.73 | within noise |" in text
    assert "| recipe, tt | tt@2012 | tt@d2l | -4.00 | 1.41 | larger than noise |" in text
    assert grid_section(groups[2:]) == []


def _script(argv: list[str], out: Path) -> str:
    env = {**os.environ, "ALEXNET2012_NO_SETUP": "1", "ALEXNET2012_NO_BAR": "1", "OUT": str(out),
           "OVERRIDES": TINY, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}  # fmt: skip
    result = subprocess.run(["bash", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=400)  # fmt: skip
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-3000:]
    return text


@pytest.mark.parametrize("seeds", [["1", "2"]])
def test_fullsize_grid_end_to_end(tmp_path, seeds):
    """launch/fullsize.sh at two seeds: the estimate first, then every cell of the 2x2 and its
    effects, and time to accuracy for each run, from run folders it wrote."""
    out = tmp_path / "grid"
    text = _script(["launch/fullsize.sh", *seeds], out)
    assert text.index("estimate: 8 runs") < text.index("== ")  # printed before any run
    report = (out / "report" / "report.md").read_text()
    for cell, config in GRID.items():
        for s in seeds:
            run = out / f"{cell}-s{s}"
            assert (run / "summary.json").is_file()
            written = yaml.safe_load((run / "config.yaml").read_text())
            assert written["model"]["name"] == load_config(config).model.name
            assert re.search(rf"\| {re.escape(cell)}-s{s} \| (not reached|[\d,]+) \|", report)
    assert re.search(r"\| two_tower \| [\d.]+ ± [\d.]+ \(2\) \| [\d.]+ ± [\d.]+ \(2\) \|", report)
    assert re.search(r"\| streamlined \| [\d.]+ ± [\d.]+ \(2\) \| [\d.]+ ± [\d.]+ \(2\) \|", report)
    effects = re.findall(r"\| (net|recipe), [^|]+ \| \S+ \| \S+ \| [+-][\d.]+ \| [\d.]+ \|", report)
    assert len(effects) == 4, report
    assert "## Time to accuracy" in report and "| group | images to 85% |" in report


def test_fidelity_fullsize_end_to_end(tmp_path):
    """launch/fidelity.sh fullsize at one seed: the estimate against the 12-minute budget, then
    every ablation with the paper's figure next to the measured one, and time to accuracy."""
    out = tmp_path / "fidelity"
    text = _script(["launch/fidelity.sh", "fullsize", "1"], out)
    assert re.search(r"estimate: 5 runs and 1 report\(s\), \d+ s .*within the budget of 12", text)
    report = (out / "report" / "report.md").read_text()
    for title, paper in (("two towers vs the one-column half net", "1.7 / 1.2"),
                         ("local response normalisation", "1.4 / 1.2"),
                         ("overlapping pooling 3/2 vs 2/2", "0.4 / 0.3"),
                         ("dropout 0.5 in fc6, fc7", "- (less overfitting")):  # fmt: skip
        assert re.search(rf"\| {re.escape(title)} \| [^|]+ \| {re.escape(paper)}", report), title
    for v in ABLATIONS:
        assert f"| {v}-s1 |" in report

"""Reports over real (tiny) runs, the colour score, the neighbour search, weight conversion and
the fidelity configs."""

import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet2012 import cli
from alexnet2012.config import load_config, to_dict
from alexnet2012.nets.baselines import torchvision_alexnet
from alexnet2012.nets.model import AlexNet2012
from alexnet2012.report import plots
from alexnet2012.report.kernels import colour_score, colour_scores
from alexnet2012.report.neighbours import feature_layer, features, nearest
from alexnet2012.report.paper import CLAIMS
from alexnet2012.report.runs import RunError, flatten, load_run, load_runs
from alexnet2012.report.stats import verdict
from alexnet2012.training import loop

PNG = b"\x89PNG\r\n\x1a\n"
BASE = [
    "data.name=synthetic", "data.synthetic_size=64", "train.batch_size=16", "train.max_steps=4",
    "train.log_every=1", "wandb.mode=disabled", "data.ten_view=true", "model.input_size=63",
    "model.widths=[16,32,48,48,32,64,64]",
]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A seed pair of the paper's net and one run without LRN: two groups, one ablation pair."""
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for name, extra in (("tt-s1", ["seed=1"]), ("tt-s2", ["seed=2"]),
                        ("nolrn-s1", ["seed=1", "model.lrn=false"])):  # fmt: skip
        dirs.append(root / name)
        loop.run(load_config("configs/debug.yaml", [*BASE, f"run.dir={dirs[-1]}", *extra]))
    return dirs


def test_compare_writes_table_groups_paper_and_plots(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli.main(["compare", *map(str, runs), "--out", str(out), "--paper"]) == 0
    text, printed = (out / "report.md").read_text(), capsys.readouterr().out
    for d in runs:
        s = json.loads((d / "summary.json").read_text())
        acc = f"{(1 - s['test/top1_err']) * 100:.2f}"
        err = [f"{s[k] * 100:.2f}" for k in ("test/top1_err", "test/top5_err")]
        ten = [f"{s[k] * 100:.2f}" for k in ("test10/top1_err", "test10/top5_err")]
        cells = [acc, *err, f"{s['test/loss']:.4f}", *ten]
        row = f"| {d.name} | alexnet2012 | original | 1 | {' | '.join(cells)} | "
        assert row in text and row in printed
        assert f"| {s['images_per_s']:.1f} | {s['params_per_rank'][0]:,} |" in text
    top1 = [json.loads((d / "summary.json").read_text())["test/top1_err"] * 100 for d in runs]
    mean, std = statistics.mean(top1[:2]), statistics.stdev(top1[:2])  # the seed pair
    assert f"| tt | 2 | 1, 2 | {mean:.2f} ± {std:.2f} |" in text
    assert f"| nolrn | 1 | 1 | {top1[2]:.2f} |" in text
    assert "2 x the pooled standard error" in text
    assert "local response normalisation | model.lrn: True / False | 1.4 / 1.2" in text
    for name in ("curves.png", "throughput.png"):
        assert (out / name).read_bytes()[:8] == PNG


def test_curves_draw_one_line_per_run(runs, tmp_path):
    loaded = load_runs(runs)
    fig = plots.curves(loaded, tmp_path / "c.png")
    assert [len(ax.lines) for ax in fig.axes] == [3, 3]
    batch = loaded[0].config["train"]["batch_size"]
    assert list(fig.axes[0].lines[0].get_xdata()) == [batch * k for k in (1, 2, 3, 4)]
    assert fig.axes[0].get_xlabel() == "images seen"  # runs of any batch size line up
    for run in loaded:  # runs written before images_seen was logged: against the step
        run.metrics = [{k: v for k, v in r.items() if k != "images_seen"} for r in run.metrics]
    fig = plots.curves(loaded, tmp_path / "c.png")
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 2, 3, 4]
    assert fig.axes[0].get_xlabel() == "step"


def test_missing_pieces_are_named(tmp_path, caplog):
    only = tmp_path / "half-done"
    only.mkdir()
    (only / "summary.json").write_text(json.dumps({"test/top1_err": 0.5}))
    run = load_run(only)
    assert run.summary["test/top1_err"] == 0.5 and run.config == {}
    assert "half-done" in caplog.text and "config.yaml" in caplog.text
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="empty"):
        load_run(tmp_path / "empty")
    assert cli.main(["compare", str(tmp_path / "nowhere")]) == 2


def test_wandb_without_the_package_is_one_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    assert cli.main(["compare", "--wandb", "team/project"]) == 2
    assert "pip install wandb" in capsys.readouterr().err


def test_noise_rule():
    diff, two_se, word = verdict([1.0, 1.1, 0.9], [3.0, 3.1, 2.9])
    assert math.isclose(diff, -2.0) and word == "larger than noise"
    assert verdict([1.0, 2.0], [1.2, 1.9])[2] == "within noise"
    assert verdict([1.0], [2.0])[2].startswith("noise unknown")


def test_colour_score_grey_and_opponent():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(11, 11, generator=g)
    p -= p.mean()
    opponent = torch.stack([p, -p, torch.zeros_like(p)])  # red minus green, zero mean
    assert colour_score(opponent) >= 0.9
    grey = (torch.randn(11, 11, generator=g) + 3).expand(3, 11, 11)
    assert abs(colour_score(grey)) < 1e-6
    scores = colour_scores(torch.stack([opponent, grey, torch.zeros(3, 11, 11)]))
    assert scores.tolist()[2] == 0.0 and 0 <= scores.min() <= scores.max() <= 1


def test_kernels_command(runs, tmp_path):
    assert cli.main(["kernels", str(runs[0]), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "kernels.png").read_bytes()[:8] == PNG
    result = json.loads((tmp_path / "kernels.json").read_text())
    assert [t["kernels"] for t in result["per_tower"]] == [8, 8]  # widths[0] = 16
    assert "difference" in result and len(result["scores"]) == 16


def test_nearest_is_exact_on_a_tiny_set():
    bank = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0], [-1.0, -1.0]])
    query = torch.tensor([[0.9, 0.1], [4.0, 4.0]])
    idx, dist = nearest(query, bank, 3)
    assert idx.tolist() == [[1, 0, 2], [3, 2, 1]]
    expected = (query[:, None] - bank[idx]).norm(dim=-1)
    torch.testing.assert_close(dist, expected)
    assert math.isclose(dist[0, 0].item(), math.hypot(0.1, 0.1), rel_tol=1e-6)
    idx2, _ = nearest(query, bank, 3, chunk=2)  # chunked search gives the same answer
    assert torch.equal(idx, idx2)


def test_feature_layer_is_the_last_hidden_relu():
    """fc7 after ReLU: 12 features for a torchvision-style net whose fc7 has 12 units."""
    net = torchvision_alexnet(10, 3, (8, 8, 8, 8, 8, 16, 12)).eval()
    assert feature_layer(net) is net.classifier[5]
    feats, labels = features(net, [(torch.randn(2, 3, 224, 224), torch.tensor([1, 2]))])
    assert feats.shape == (2, 12) and feats.min() >= 0 and labels.tolist() == [1, 2]


def test_neighbours_command(runs, tmp_path):
    args = ["--out", str(tmp_path), "--queries", "2", "--k", "3", "--limit", "40"]
    assert cli.main(["neighbours", str(runs[0]), *args]) == 0
    assert (tmp_path / "neighbours.png").read_bytes()[:8] == PNG
    result = json.loads((tmp_path / "neighbours.json").read_text())
    assert result["feature_dim"] == 64 and result["searched"] == 40  # fc7 width of debug.yaml
    for q in result["queries"]:
        assert len(q["train_index"]) == 3 and q["distances"] == sorted(q["distances"])


def _fake(shapes: dict) -> dict:
    """Distinct values per position (cheap for 61M parameters)."""
    return {k: torch.arange(math.prod(s), dtype=torch.float32).reshape(s) / 7 + i
            for i, (k, s) in enumerate(shapes.items())}  # fmt: skip


def test_convert_caffe_round_trip(tmp_path):
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in AlexNet2012(preset="caffe").state_dict().items()}
    blobs = _fake(shapes)
    np.savez(tmp_path / "bvlc.npz", **{k: v.numpy() for k, v in blobs.items()})
    assert cli.main(["convert", str(tmp_path / "bvlc.npz"), str(tmp_path / "c.pt"),
                     "--from", "caffe"]) == 0  # fmt: skip
    state = torch.load(tmp_path / "c.pt")
    with torch.device("meta"):
        net = AlexNet2012(preset="caffe")
    net.load_state_dict(state, assign=True)  # strict: every canonical key, every shape
    assert torch.equal(state["conv1.weight"], blobs["conv1.weight"].flip(1))  # BGR -> RGB
    for k in shapes:
        if k != "conv1.weight":
            assert torch.equal(state[k], blobs[k]), k


def test_convert_torchvision_round_trip(tmp_path):
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision_alexnet().state_dict().items()}
    weights = _fake(shapes)
    torch.save(weights, tmp_path / "tv.pth")
    assert cli.main(["convert", str(tmp_path / "tv.pth"), str(tmp_path / "out.pth"),
                     "--from", "torchvision"]) == 0  # fmt: skip
    state = torch.load(tmp_path / "out.pth")
    with torch.device("meta"):
        net = torchvision_alexnet()
    net.load_state_dict(state, assign=True)  # strict
    assert all(torch.equal(state[k], weights[k]) for k in shapes)


def _small_caffe(classes=10, **wrong) -> dict:
    with torch.device("meta"):
        net = AlexNet2012(classes, preset="caffe", widths=(8, 16, 16, 16, 8, 32, 32))
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    return {k: np.random.default_rng(0).standard_normal(wrong.get(k.replace(".", "_"), s))
            for k, s in shapes.items()}  # fmt: skip


def test_convert_rejects_wrong_shapes_naming_the_layer(tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", **_small_caffe(fc7_weight=(32, 30)))
    assert cli.main(["convert", str(tmp_path / "bad.npz"), str(tmp_path / "x.pt"),
                     "--from", "caffe"]) == 2  # fmt: skip
    assert "fc7.weight" in capsys.readouterr().err
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision_alexnet().state_dict().items()}
    shapes["features.3.weight"] = (192, 60, 5, 5)
    torch.save({k: torch.zeros(s) for k, s in shapes.items()}, tmp_path / "bad.pth")
    assert cli.main(["convert", str(tmp_path / "bad.pth"), str(tmp_path / "y.pth"),
                     "--from", "torchvision"]) == 2  # fmt: skip
    assert "features.3.weight" in capsys.readouterr().err
    (tmp_path / "m.caffemodel").write_bytes(b"\x00")
    assert cli.main(["convert", str(tmp_path / "m.caffemodel"), str(tmp_path / "z.pt"),
                     "--from", "caffe"]) == 2  # fmt: skip
    assert ".npz first" in capsys.readouterr().err


def test_converted_run_folder_evaluates(tmp_path, capsys):
    np.savez(tmp_path / "small.npz", **_small_caffe())
    run = tmp_path / "run"
    data = [
        "data.name=synthetic",
        "data.synthetic_size=40",
        "data.test_subset=2",
        "train.batch_size=2",
    ]
    assert cli.main(["convert", str(tmp_path / "small.npz"), str(run), "--from", "caffe",
                     "--evaluate", "--set", *data]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    scores = dict(line.split(": ") for line in printed.splitlines() if line.startswith("test"))
    assert {"test/top1_err", "test10/top5_err"} <= set(scores), printed
    assert all(0 <= float(v) <= 1 for k, v in scores.items() if "err" in k), scores
    assert load_run(run).config["model"]["widths"] == [8, 16, 16, 16, 8, 32, 32]
    # the run folder and an existing weights file are never overwritten
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    npz = str(tmp_path / "small.npz")
    assert cli.main(["convert", npz, str(run), "--from", "caffe"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before
    (tmp_path / "mine.pt").write_bytes(b"keep")
    assert cli.main(["convert", npz, str(tmp_path / "mine.pt"), "--from", "caffe"]) == 2
    assert "--force" in capsys.readouterr().err and (tmp_path / "mine.pt").read_bytes() == b"keep"
    assert cli.main(["convert", npz, str(tmp_path / "mine.pt"), "--from", "caffe", "--force"]) == 0
    assert "conv1.weight" in torch.load(tmp_path / "mine.pt", weights_only=True)
    own = str(run / "checkpoints" / "ckpt-00000000.pt")  # this project's own checkpoint
    assert cli.main(["convert", own, str(tmp_path / "again.pt"), "--from", "caffe"]) == 2
    assert "already an alexnet2012 checkpoint" in capsys.readouterr().err


def test_fidelity_configs_each_change_one_ablation_key():
    """Each variant differs from its scale's two_tower in one key that --paper recognises."""
    keys = {c.key for c in CLAIMS}
    for scale, count in (("fmnist", 7), ("fullsize", 4), ("imagenet", 8)):
        ref = flatten(to_dict(load_config(f"configs/fidelity/{scale}_two_tower.yaml")))
        variants = [p for p in sorted(Path("configs/fidelity").glob(f"{scale}_*.yaml"))
                    if not p.stem.endswith(("_base", "_two_tower"))]  # fmt: skip
        assert len(variants) == count, variants
        for path in variants:
            cfg = flatten(to_dict(load_config(path)))
            diff = {k for k in ref if ref[k] != cfg[k]}
            assert len(diff) == 1 and diff <= keys, (path, diff)

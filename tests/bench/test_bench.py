"""``alexnet2012 bench`` on CPU with the debug net: every execution, every key, measured bytes.

The bytes each exchange point sends per step come from the run's counters; here they must equal
the volume the layer sizes give (docs/parallel.md, "Communication volume"): at conv3, fc6 and fc7
one tower's input activation forward (all-gather) and its gradient backward (reduce-scatter);
at fc8 the fc7 output once each way (fc8 on rank 0), or the logits once (fc8 split).
"""

import json
import math
import re
from pathlib import Path

import pytest

from alexnet2012 import cli
from alexnet2012.config import load_config
from alexnet2012.nets.build import build_model

DEBUG = str(Path(__file__).resolve().parents[2] / "configs" / "debug.yaml")
TINY = ["--config", DEBUG, "data.name=synthetic", "train.batch_size=8", "--warmup", "2"]
NAMES = {"two_ranks/rank0", "two_ranks/split", "emulated", "streamlined", "torchvision",
         "rank_share/rank0", "rank_share/split"}  # fmt: skip
EVERY = "two_ranks,emulated,streamlined,torchvision,rank_share"
POSITIVE = ("images_per_s", "epoch_s", "step_s_median", "step_s_mean", "step_s_p10",
            "step_s_p90", "forward_macs", "train_gflop_per_image", "achieved_tflops")  # fmt: skip
PER_RANK = ("peak_memory_per_rank", "memory_at_start_per_rank", "param_bytes_per_rank",
            "optimizer_bytes_per_rank", "threads_per_rank")  # fmt: skip


def _run(tmp_path, *argv) -> dict:
    out = tmp_path / "report.json"
    assert cli.main(["bench", *argv, "--json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One bench of every execution, both fc8 placements (the slow part, shared)."""
    path = tmp_path_factory.mktemp("bench")
    return _run(path, *TINY, "--steps", "3", "--fc8", "both", "--flops", "--peak-tflops", "1",
                "--executions", EVERY)  # fmt: skip


def _finite_positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_every_execution_reports_every_key(report):
    rows = {r["name"]: r for r in report["results"]}
    assert set(rows) == NAMES, report["notes"]
    for name, r in rows.items():
        for key in (*POSITIVE, "peak_tflops", "peak_share"):
            assert _finite_positive(r[key]), (name, key, r[key])
        for key in PER_RANK:
            assert len(r[key]) == r["world_size"], (name, key)
            assert all(_finite_positive(v) for v in r[key]), (name, key, r[key])
        assert r["steps"] == 3 and r["warmup"] == 2 and r["batch_size"] == 8
        assert r["step_s_p10"] <= r["step_s_median"] <= r["step_s_p90"]
        assert r["peak_memory_kind"] == "max_rss" and r["device"] == "cpu"
        # momentum SGD keeps one buffer the size of each parameter
        assert r["optimizer_bytes_per_rank"] == r["param_bytes_per_rank"]
        shares = r["exchange_share_per_rank"]
        if r["world_size"] == 2:
            assert r["backend"] == "gloo" and all(0 < s < 1 for s in shares), shares
        elif r["execution"] == "emulated":  # one process exchanges nothing
            assert r["bytes_per_step_per_rank"] == [0] and r["bytes_per_step_by_point"] == {}
            assert shares == [0.0]


def _expected_bytes(fc8: str) -> dict[str, int]:
    cfg = load_config(DEBUG, ["data.name=synthetic"])
    model = build_model(cfg, 10, 3)
    n, f, c = 8, 4, cfg.model.widths  # batch, fp32 bytes, widths conv1..fc7 (both towers)
    s3, s6 = model.sizes["conv3"], model.sizes["fc"]  # after pool2, after pool5
    tower_in = {"conv3": c[1] // 2 * s3 * s3, "fc6": c[4] // 2 * s6 * s6, "fc7": c[5] // 2}
    out = {k: 2 * n * v * f for k, v in tower_in.items()}  # forward gather + backward scatter
    out["fc8"] = n * (c[6] // 2 if fc8 == "rank0" else 10) * f
    return out


@pytest.mark.parametrize("fc8", ["rank0", "split"])
def test_two_ranks_bytes_are_the_layer_sizes(report, fc8):
    row = next(r for r in report["results"] if r["name"] == f"two_ranks/{fc8}")
    expected = _expected_bytes(fc8)
    assert row["bytes_per_step_by_point"] == {k: [v, v] for k, v in expected.items()}
    assert row["bytes_per_step_per_rank"] == [sum(expected.values())] * 2


@pytest.mark.parametrize("fc8", ["rank0", "split"])
def test_rank_share_makes_rank0s_exchange_calls(report, fc8):
    """One rank's share on one device (comm/loopback.py) makes the exchange calls rank 0 of
    two ranks makes, with the same bytes; the projection adds each call's modelled link time
    to the share's compute."""
    rows = {r["name"]: r for r in report["results"]}
    share, two = rows[f"rank_share/{fc8}"], rows[f"two_ranks/{fc8}"]
    assert share["world_size"] == 1 and share["fc8"] == fc8
    assert share["bytes_per_step_by_point"] == {
        k: v[:1] for k, v in two["bytes_per_step_by_point"].items()
    }
    assert share["calls_per_step_by_point"] == two["calls_per_step_by_point"]
    calls = share["calls_per_step_by_point"]  # forward and backward; a split fc8's is identity
    assert calls == {"conv3": 2, "fc6": 2, "fc7": 2, "fc8": 2 if fc8 == "rank0" else 1}
    (p,) = [p for p in report["projections"] if p["execution"] == f"rank_share/{fc8}"]
    assert p["compute_s"] == pytest.approx(share["step_s_median"] - p["local_copies_s"])
    for link in p["links"]:
        calls = sum(share["calls_per_step_by_point"].values())
        wire = sum(p["bytes_per_step"].values()) / (link["gb_per_s"] * 1e9)
        want = p["compute_s"] + calls * link["latency_us"] * 1e-6 + wire
        assert link["step_s"] == pytest.approx(want)
        assert link["images_per_s"] == pytest.approx(8 / want)
    extra = 2 if fc8 == "rank0" else 1  # the head also receives fc8's forward
    assert p["bytes_per_step"]["fc8"] == extra * share["bytes_per_step_by_point"]["fc8"][0]


def test_bench_norms_times_each_norm_of_the_net(tmp_path):
    """``bench norms``: every response norm of the configured net at its own input shape,
    fused against the formulas."""
    rep = _run(tmp_path, "norms", "--config", DEBUG, "data.name=synthetic",
               "train.batch_size=4", "--steps", "1")  # fmt: skip
    norms = [(r["norm"], r["shape"]) for r in rep["norms"]]
    assert norms == [("TowerLRN", [4, 16, 22, 22]), ("TowerLRN", [4, 32, 11, 11]),
                     ("SpatialNorm", [4, 32, 11, 11])], norms  # fmt: skip
    assert all(_finite_positive(r[k]) for r in rep["norms"] for k in ("fused_ms", "formula_ms"))


def test_profile_names_where_the_step_goes(tmp_path, capsys):
    """``--profile N``: the top operations of N more steps by their own time, per execution."""
    rep = _run(tmp_path, *TINY, "--steps", "1", "--executions", "emulated", "--profile", "2")
    (row,) = rep["results"]
    top = row["profile"]
    assert 0 < len(top) <= 15 and all(r["ms_per_step"] > 0 for r in top)
    assert [r["ms_per_step"] for r in top] == sorted((r["ms_per_step"] for r in top), reverse=True)
    assert 0 < sum(r["share"] for r in top) <= 1 + 1e-9
    assert any("convolution" in r["op"] for r in top), [r["op"] for r in top]
    assert "emulated: top operations by their own CPU time" in capsys.readouterr().out


def test_ratios_side_by_side(report):
    rat = report["ratios"]
    assert set(rat["step_time_two_ranks_over_emulated"]) == {"rank0", "split"}
    assert all(_finite_positive(v) for v in rat["step_time_two_ranks_over_emulated"].values())
    mem = rat["memory_larger_rank_over_one_process"]
    for fc8 in ("rank0", "split"):
        assert mem[fc8]["source"] == "measured"
        assert 0.5 <= mem[fc8]["ratio"] < 0.6, mem  # each rank holds about half


def test_overlap_is_what_two_ranks_time(tmp_path, report):
    """parallel.overlap reaches the measured step (two ranks only; one process has no exchange)."""
    rows = {r["name"]: r for r in report["results"]}
    assert not any(r["overlapped"] for r in rows.values())
    on = _run(tmp_path, *TINY, "parallel.overlap=true", "--steps", "2",
              "--executions", "two_ranks,emulated")  # fmt: skip
    assert {r["name"]: r["overlapped"] for r in on["results"]} == {
        "two_ranks/rank0": True, "emulated": False}  # fmt: skip


def test_placement_not_run_comes_from_the_plan(tmp_path):
    rep = _run(tmp_path, *TINY, "--steps", "1", "--executions", "two_ranks,emulated")
    mem = rep["ratios"]["memory_larger_rank_over_one_process"]
    assert mem["rank0"]["source"] == "measured" and mem["split"]["source"] == "plan"
    assert 0.5 <= mem["split"]["ratio"] <= mem["rank0"]["ratio"]


def test_bench_data_on_synthetic(tmp_path):
    rep = _run(tmp_path, "data", *TINY, "--steps", "2")
    pipes = {p["pipeline"]: p for p in rep["pipelines"]}
    assert "synthetic" in pipes
    assert "fashion_mnist" in pipes or any("fashion_mnist" in n for n in rep["notes"])
    train = rep["train"]
    assert train["name"] == "emulated" and _finite_positive(train["images_per_s"])
    for p in pipes.values():
        assert _finite_positive(p["images_per_s"]) and p["batch_shape"][0] == 8
        assert p["ratio"] == pytest.approx(p["images_per_s"] / train["images_per_s"])
        assert p["meets_target"] == (p["ratio"] >= rep["target_ratio"])


def test_bad_arguments_are_user_errors(capsys):
    assert cli.main(["bench", *TINY, "--executions", "two_ranks,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_gpu_check_runs_without_cuda_or_optional_packages(tmp_path):
    """launch/gpu_check.sh up to its GPU-only parts: here it says there is no CUDA, runs the
    same benches tiny on the CPU and prints its summary, with wandb, pytest and torchvision made
    unimportable (the GPU machine may lack them)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    stubs = tmp_path / "stubs"
    for name in ("wandb", "pytest", "torchvision"):
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text(f"raise ImportError('{name} is absent here')\n")
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable,
           "PYTHONPATH": str(stubs), "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    probe = subprocess.run([sys.executable, "-c", "import wandb"], env=env, capture_output=True)
    assert b"wandb is absent here" in probe.stderr  # the stubs do hide the packages
    result = subprocess.run(["bash", "launch/gpu_check.sh"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "CUDA is not available here; skipped" in out and "GPU parts (2, 3, 5) skipped" in out
    for name in ("streamlined", "emulated"):
        assert re.search(rf"bench_cpu_tiny.json: {name} +\d+ img/s, epoch +[\d.]+ s", out), out
    report = json.loads((tmp_path / "out" / "bench_cpu_tiny.json").read_text())
    assert {r["name"] for r in report["results"]} == {"streamlined", "emulated"}
    assert all(r["images_per_s"] > 0 for r in report["results"])
    assert re.search(r"loadbench.json: crop_flip_uint8 +\d+ img/s per core", out), out
    # one rank's share projected to two devices, at each assumed link; the fused norms' times
    for link in ("NVLink 4", "PCIe 5.0 x16", "PCIe 4.0 x16"):
        assert re.search(rf"two devices projected from rank_share/rank0, {link}.*\d+ img/s", out)
    assert re.search(r"norms_cpu_tiny.json: the norms forward \+ backward [\d.]+ ms fused", out)


def test_bench_times_the_step_training_runs(tmp_path, monkeypatch):
    """``train`` and ``bench`` both run :class:`TrainStep`: the same step, counted in each."""
    from alexnet2012 import config as cfgmod
    from alexnet2012.bench import measure
    from alexnet2012.control import torchrun
    from alexnet2012.training import loop, step

    calls = []
    real = step.TrainStep.__call__

    def counted(self, x, y, i):
        calls.append(i)
        return real(self, x, y, i)

    monkeypatch.setattr(step.TrainStep, "__call__", counted)
    over = ["data.name=synthetic", "data.synthetic_size=64", "train.batch_size=8",
            "train.max_steps=4", "wandb.mode=disabled", f"run.dir={tmp_path / 'run'}"]  # fmt: skip
    cfg = load_config(DEBUG, over)
    loop.run(cfg)
    assert calls == [0, 1, 2, 3]
    calls.clear()
    job = measure.Job("emulated", "emulated", cfgmod.to_dict(cfg), 10, 3, 3, 2, False)
    with torchrun.session(60, "cpu") as env:  # one process, in this one
        figures = measure.measure(job, env)
    assert calls == [0, 1, 2, 3, 4] and len(figures["step_s"]) == 3


def test_exchange_breakdown_arithmetic():
    """Waiting is the time until the later rank arrives; the call's own time runs from there."""
    from alexnet2012.bench.exchanges import breakdown, format_breakdown

    probe = {"median": 1e-4, "mean": 2e-4, "p99": 1e-3, "over_1ms": 0.0}
    ranks = [
        {"step_s": [3.0, 3.0], "exchange_calls": [{"name": "fc6", "kind": "all_gather",
         "bytes": 8, "enter": [1.0, 10.0], "exit": [1.7, 10.4],
         "alone_s": probe, "latency_s": probe}]},
        {"step_s": [3.0, 3.0], "exchange_calls": [{"name": "fc6", "kind": "all_gather",
         "bytes": 8, "enter": [1.5, 10.1], "exit": [1.8, 10.3],
         "alone_s": probe, "latency_s": probe}]},
    ]  # fmt: skip
    b = breakdown(ranks)
    (call,) = b["calls"]
    assert call["wait_ms"] == pytest.approx([1e3 * (0.5 + 0.1) / 2, 0.0])
    assert call["call_mean_ms"] == pytest.approx([1e3 * (0.2 + 0.3) / 2, 1e3 * (0.3 + 0.2) / 2])
    mean = b["per_step_mean_ms"]
    assert mean["wait"] == pytest.approx([300.0, 0.0])
    assert mean["compute"] == pytest.approx([3000.0 - 300.0 - 250.0, 3000.0 - 250.0])
    assert b["alone_per_step_ms"]["median"] == pytest.approx(0.1)
    assert "fc6      all-gather" in format_breakdown(b)


def test_exchange_breakdown_of_each_placement(tmp_path):
    """bench --exchanges: every exchange call of a two-rank step, in order, with its bytes, and
    the step split into compute, waiting and time in the calls (which add up to the step)."""
    rep = _run(tmp_path, *TINY, "--steps", "3", "--fc8", "both", "--executions", "two_ranks",
               "--exchanges")  # fmt: skip
    kinds = {
        "rank0": ["all_gather"] * 3 + ["to_head", "from_head"] + ["reduce_scatter"] * 3,
        "split": ["all_gather"] * 3 + ["all_reduce"] + ["reduce_scatter"] * 3,
    }
    for row in rep["results"]:
        b = row["exchange_breakdown"]
        assert [c["kind"] for c in b["calls"]] == kinds[row["fc8"]], row["fc8"]
        names = [c["name"] for c in b["calls"]]
        assert names[:3] == ["conv3", "fc6", "fc7"] and names[-3:] == ["fc7", "fc6", "conv3"]
        for point in ("conv3", "fc6", "fc7"):  # forward and backward: one tower's tensor each
            sent = sum(c["bytes"] for c in b["calls"] if c["name"] == point)
            assert sent == row["bytes_per_step_by_point"][point][0] > 0
        for c in b["calls"]:
            assert all(w >= 0 for w in c["wait_ms"]) and all(t > 0 for t in c["call_ms"])
            for probe in (c["alone_ms"], c["latency_ms"]):
                assert probe["median"] > 0 and 0 <= probe["over_1ms"] <= 1
        mean = b["per_step_mean_ms"]
        for r in range(2):
            total = mean["compute"][r] + mean["wait"][r] + mean["call"][r]
            assert total == pytest.approx(mean["step"][r]) and mean["compute"][r] > 0

"""W&B on offline runs, read back with wandb's own local reader (``wandb leet inspect``):
images seen as the step metric, the epoch, every rank's figures in the summary, and the
comparison logged as a run of job type ``report`` naming the runs it compared."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from spawn import run_ranks

from alexnet2012 import cli
from alexnet2012.config import load_config
from alexnet2012.control import torchrun
from alexnet2012.training import loop

pytest.importorskip("wandb")
ROOT = Path(__file__).resolve().parents[2]
OFFLINE = ["data.name=synthetic", "data.synthetic_size=64", "train.batch_size=16",
           "train.max_steps=3", "train.log_every=1", "wandb.mode=offline", "wandb.group=g",
           "data.test_subset=0"]  # fmt: skip


def records(folder: Path) -> list[dict]:
    """Every record of the offline W&B run under ``folder`` (skips the test without leet)."""
    exe = Path(sys.executable).with_name("wandb")
    exe = str(exe) if exe.exists() else shutil.which("wandb")
    (run,) = (folder / "wandb").glob("offline-run-*")
    out = subprocess.run([exe, "leet", "inspect", "--json", str(run)], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    if out.returncode != 0:
        pytest.skip(f"this wandb cannot read its offline runs locally: {out.stderr[-300:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def _two_ranks(rank, run_dir):
    cfg = load_config("configs/debug.yaml", [*OFFLINE, f"run.dir={run_dir}"])
    env = torchrun.mesh_env(rank, 2, rank, torch.device("cpu"), "gloo")
    return loop.run(cfg, env=env)["world_size"]


def test_offline_runs_line_up_and_carry_every_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    run_dir = tmp_path / "two"
    assert run_ranks(_two_ranks, 2, tmp_path, args=(str(run_dir),)) == [2, 2]
    recs = records(run_dir)
    steps = {m["metric"].get("glob_name") or m["metric"]["name"]: m["metric"].get("step_metric")
             for m in (r for r in recs if r["type"] == "metric")}  # fmt: skip
    assert "images_seen" in steps and steps["train/*"] == steps["val/*"] == "images_seen"
    history = [r["history"]["item"] for r in recs if r["type"] == "history"]
    assert [h["images_seen"] for h in history] == [16, 32, 48]  # 16 images a step, one pair
    assert all("epoch" in h for h in history)
    summary = {}
    for r in recs:
        if r["type"] == "summary":
            summary.update(r["summary"]["update"])
    for key in ("peak_memory_per_rank", "params_per_rank", "bytes_exchanged_per_step_per_rank",
                "exchange_wait_share_per_rank"):  # fmt: skip
        assert f"{key}/rank0" in summary and f"{key}/rank1" in summary, key
    assert summary["bytes_exchanged_per_step_per_rank/rank1"] > 0
    # the comparison, as a W&B report run naming what it compared
    one = tmp_path / "one"
    loop.run(load_config("configs/debug.yaml", [*OFFLINE, f"run.dir={one}"]))
    out = tmp_path / "report"
    assert cli.main(["compare", str(run_dir), str(one), "--out", str(out)]) == 0
    recs = records(out)
    (run,) = [r["run"] for r in recs if r["type"] == "run"]
    assert run["job_type"] == "report" and run["run_group"] == "g"
    compared = run["config"]["update"]["compared"]
    compared = compared["value"] if isinstance(compared, dict) else compared
    assert [c["name"] for c in compared] == ["two", "one"]
    ids = {c["wandb_id"] for c in compared}
    assert ids == {(run_dir / "wandb_id.txt").read_text().strip(),
                   (one / "wandb_id.txt").read_text().strip()}  # fmt: skip
    logged = set().union(*(r["history"]["item"] for r in recs if r["type"] == "history"))
    assert {"curves._type", "throughput._type", "runs._type"} <= logged  # images and a table
    assert {"curves.sha256", "throughput.sha256", "runs.nrows"} <= logged

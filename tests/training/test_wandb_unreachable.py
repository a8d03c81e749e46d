"""A W&B server that cannot be reached (a closed local port, an API key set, as on a compute
node without internet): one process and two ranks train exactly as with W&B disabled, after a
bounded wait, and keep the run offline in the run folder for a later ``wandb sync``."""

import json
import logging
import socket
import time
from pathlib import Path

import pytest
import torch
from faultkit import history
from spawn import run_ranks

from alexnet2012.config import load_config
from alexnet2012.control import torchrun
from alexnet2012.training import loop

pytest.importorskip("wandb")
ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 6  # wandb.init_timeout_s here; the ranks' parallel.timeout_s is shorter (3 s)
RUN = ["data.name=synthetic", "data.synthetic_size=64", "data.test_subset=0",
       "train.batch_size=16", "train.max_steps=3", "train.log_every=1", "train.device=cpu",
       "parallel.timeout_s=3", f"wandb.init_timeout_s={WAIT_S}"]  # fmt: skip
FINAL = ("steps", "test/loss", "test/top1_err", "test/top5_err", "final_val_loss")


@pytest.fixture(autouse=True)
def unreachable(tmp_path, monkeypatch):
    """An API key and a W&B server on a local port that refuses connections; W&B's files kept
    away from the real home."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed.getsockname()[1]}")
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef" * 2 + "01234567")  # 40 hex digits
    for name in ("HOME", "WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_MODE", "NETRC", "WANDB_SERVICE"):  # as under torchrun: a service each
        monkeypatch.delenv(name, raising=False)
    yield
    closed.close()


def train_both(run_dir: Path, mode: str, env=None) -> float:
    """Train with W&B disabled into ``run_dir/off``, then with ``mode`` into ``run_dir/on``;
    the seconds the second run took."""
    config = str(ROOT / "configs" / "debug.yaml")
    loop.run(load_config(config, [*RUN, "wandb.mode=disabled", f"run.dir={run_dir / 'off'}"]),
             env=env)  # fmt: skip
    started = time.monotonic()
    loop.run(load_config(config, [*RUN, f"wandb.mode={mode}", f"run.dir={run_dir / 'on'}"]),
             env=env)  # fmt: skip
    return time.monotonic() - started


def assert_same_as_disabled(run_dir: Path) -> Path:
    """The run with W&B trained exactly as the one without; its offline W&B run folder."""
    on, off = run_dir / "on", run_dir / "off"
    assert history(on) == history(off) and len(history(on)) >= 3
    got, want = (json.loads((d / "summary.json").read_text()) for d in (on, off))
    assert {k: got[k] for k in FINAL} == {k: want[k] for k in FINAL}
    assert (on / "config.yaml").is_file() and not (off / "wandb").exists()
    (offline,) = (on / "wandb").glob("offline-run-*")
    run_id = (on / "wandb_id.txt").read_text().strip()
    assert offline.name.endswith(run_id) and (offline / f"run-{run_id}.wandb").stat().st_size > 0
    return offline


def test_one_process_logs_offline_after_a_bounded_wait(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="alexnet2012")
    took = train_both(tmp_path, "auto")  # auto with a key: online
    assert took < WAIT_S + 60, took  # wandb's own default would wait 90 s, then log nothing
    offline = assert_same_as_disabled(tmp_path)
    told = [r.getMessage() for r in caplog.records if "logging offline" in r.getMessage()]
    assert len(told) == 1 and f"wandb sync {offline}" in told[0], told
    assert f"wandb.init_timeout_s={WAIT_S}" in told[0]


def _two_ranks(rank, run_dir):
    env = torchrun.mesh_env(rank, 2, rank, torch.device("cpu"), "gloo")
    return train_both(Path(run_dir), "online", env=env)


def test_two_ranks_wait_for_rank0s_start_and_log_offline(tmp_path):
    """Rank 1 waits for rank 0's W&B start (longer than parallel.timeout_s) patiently."""
    took = run_ranks(_two_ranks, 2, tmp_path, args=(str(tmp_path / "run"),), timeout=240)
    assert all(t >= WAIT_S for t in took), took  # rank 1 waited for rank 0's bounded start
    assert_same_as_disabled(tmp_path / "run")

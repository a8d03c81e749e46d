"""A run folder belongs to one job; full disks and ambiguous configs are named.

Two live jobs on one folder, a crashed job's folder, a folder with an earlier run but no
checkpoint, a folder path that cannot be made (on two ranks), ENOSPC at each place a run writes,
duplicate YAML keys and sections, empty and non-UTF-8 config files.
"""

import errno
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from spawn import run_ranks

from alexnet2012 import files
from alexnet2012.config import ConfigError, load_config
from alexnet2012.control import torchrun
from alexnet2012.control.runlock import RunFolderError, RunLock
from alexnet2012.files import DiskFullError
from alexnet2012.training import checkpoint, loop, tracking

ROOT = Path(__file__).resolve().parents[2]
DEBUG = str(ROOT / "configs" / "debug.yaml")
SMALL = ["data.name=synthetic", "data.synthetic_size=64", "train.batch_size=16",
         "wandb.mode=disabled", "data.train_subset=0", "data.test_subset=0",
         "train.epochs=1"]  # fmt: skip


def cfg_for(run_dir, *extra):
    return load_config(DEBUG, [*SMALL, f"run.dir={run_dir}", *extra])


def cli(*argv, timeout=120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", ALEXNET2012_NO_BAR="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "alexnet2012", *map(str, argv)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)  # fmt: skip


def one_line_error(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if "alexnet2012 train" in ln]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def test_a_live_job_keeps_its_folder(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(  # another job: holds the lock until killed
        [sys.executable, "-c", "import sys, time; from alexnet2012.control.runlock import "
         "RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)",
         str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        result = cli("train", "--config", DEBUG, *SMALL, f"run.dir={run_dir}")
        assert result.returncode == 2
        line = one_line_error(result)
        assert f"{run_dir} is in use by a live job" in line and f"pid {holder.pid}" in line
        assert not (run_dir / "config.yaml").exists() and not (run_dir / "metrics.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the OS drops the lock
        holder.wait()
    loop.run(cfg_for(run_dir, "train.max_steps=2"))  # no stale lock after the crash
    assert checkpoint.checkpoints(run_dir)


def test_the_lock_is_held_for_the_run_and_released_after(tmp_path, monkeypatch):
    run_dir, seen = tmp_path / "run", []
    real = checkpoint.save

    def save(run_dir_, payload, step, keep=2):  # while the run saves, nobody else gets in
        with pytest.raises(RunFolderError, match="in use by a live job"):
            RunLock(run_dir_).acquire()
        seen.append(step)
        return real(run_dir_, payload, step, keep)

    monkeypatch.setattr(checkpoint, "save", save)
    loop.run(cfg_for(run_dir, "train.max_steps=2"))
    assert seen == [2]
    RunLock(run_dir).acquire().release()  # free once the run returned


def test_an_earlier_run_without_checkpoint_is_not_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 5\n")
    (run_dir / "metrics.jsonl").write_text('{"step": 3, "train/loss": 2.0}\n')
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(RunFolderError, match="earlier run's config.yaml, metrics.jsonl but no"):
        loop.run(cfg_for(run_dir, "train.max_steps=2"))
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()
            and p.name != "job.lock"} == before  # fmt: skip
    loop.run(cfg_for(run_dir, "train.max_steps=2"), replace=True)
    (aside,) = run_dir.glob("replaced-*")
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before  # nothing lost
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert '"step": 3' not in lines[0]  # the new run's own metrics


def _make_dir_fails(rank, run_dir):
    env = torchrun.mesh_env(rank, 2, rank, torch.device("cpu"), "gloo")
    try:
        loop.run(cfg_for(run_dir), env=env)
    except RunFolderError as e:
        return str(e)
    return "started"


def test_a_folder_that_cannot_be_made_is_named_on_every_rank(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    messages = run_ranks(_make_dir_fails, 2, tmp_path, args=(str(afile / "run"),))
    assert messages[0] == messages[1]
    assert f"run.dir {afile / 'run'}: cannot create the folder" in messages[0]


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_at_each_write_is_named_and_keeps_what_was_saved(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    loop.run(cfg_for(run_dir, "train.max_steps=2"))
    saved = {p: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    # the checkpoint itself: torch.save reports ENOSPC wrapped in a RuntimeError
    wrapped = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")

    def torch_save(obj, f):
        raise wrapped

    with monkeypatch.context() as m:
        m.setattr(checkpoint.torch, "save", torch_save)
        with pytest.raises(DiskFullError, match=r"ckpt-00000003.pt \(about .* [KM]iB needed"):
            loop.run(cfg_for(run_dir, "train.max_steps=3"), resume=True)
    assert {p: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()} == saved
    # summary.json and config.yaml go through the atomic writer
    with monkeypatch.context() as m:
        m.setattr(files, "_write", enospc)
        with pytest.raises(DiskFullError, match="writing config.yaml"):
            loop.run(cfg_for(tmp_path / "other", "train.max_steps=1"))
    # metrics.jsonl is appended to
    logger = tracking.RunLogger(tmp_path / "m")
    logger._file = type("Full", (), {"write": enospc, "flush": enospc, "closed": False})()
    with pytest.raises(DiskFullError, match="writing metrics.jsonl"):
        logger.log({"train/loss": 1.0}, 1)
    # a resume checks for room for one more checkpoint before training
    usage = files.shutil.disk_usage(run_dir)
    with monkeypatch.context() as m:
        m.setattr(checkpoint.shutil, "disk_usage", lambda p: usage._replace(free=1000))
        with pytest.raises(DiskFullError, match=r"ckpt-next.pt \(about .* [KM]iB needed, 1 KiB"):
            loop.run(cfg_for(run_dir, "train.max_steps=4"), resume=True)
    assert {p: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()} == saved


def test_a_full_disk_through_the_command_line_exits_3(tmp_path):
    """ENOSPC injected into the checkpoint write of a real CLI run: one line, exit 3."""
    run_dir = tmp_path / "run"
    code = ("import errno, sys, torch; from alexnet2012.training import checkpoint\n"
            "def full(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')\n"
            "checkpoint.torch.save = full\n"
            "from alexnet2012.cli import main; sys.exit(main(sys.argv[1:]))")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ALEXNET2012_NO_BAR": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code, "train", "--config", DEBUG, *SMALL, f"run.dir={run_dir}",
         "train.max_steps=2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr[-2000:]
    line = one_line_error(result)
    assert "no space left on the device of" in line and "ckpt-00000002.pt" in line


def test_orphan_checksums_are_cleared_at_start(tmp_path):
    run_dir = tmp_path / "run"
    loop.run(cfg_for(run_dir, "train.max_steps=2"))
    orphan = run_dir / "checkpoints" / "ckpt-00000009.pt.sha256"
    orphan.write_text("0" * 64 + "  ckpt-00000009.pt\n")  # a kill between the two writes
    loop.run(cfg_for(run_dir, "train.max_steps=3"), resume=True)
    assert not orphan.exists()


@pytest.mark.parametrize(
    "text, words",
    [
        ("train:\n  lr: 0.1\n  lr: 0.2\n", "key 'lr' is given twice, on lines 2 and 3"),
        ("train:\n  lr: 0.1\nseed: 1\ntrain:\n  epochs: 2\n", "'train' is given twice, on lines 1 and 4"),  # noqa: E501
        ("", "is empty; give it the keys to change"),
        ("# only a comment\n", "is empty"),
    ],
)  # fmt: skip
def test_ambiguous_configs_are_named(tmp_path, text, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_config(path)


def test_config_problems_through_the_command_line(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("train:\n  lr: 0.1  # caf\xe9\n".encode("latin-1"))
    dup = tmp_path / "dup.yaml"
    dup.write_text("train:\n  lr: 0.1\ntrain:\n  epochs: 2\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("")  # an emptied run config
    (run / "checkpoints").mkdir()
    expect = {
        (bad,): f"config file {bad} is not UTF-8 text (byte 23: 0xe9)",
        (dup,): "'train' is given twice, on lines 1 and 3",
    }
    for (path,), words in expect.items():
        result = cli("train", "--config", path)
        assert result.returncode == 2 and words in one_line_error(result), result.stderr
    result = cli("train", "--resume", run)
    assert result.returncode == 2
    assert f"config file {run / 'config.yaml'} is empty" in one_line_error(result)


def test_lock_file_names_its_holder(tmp_path):
    lock = RunLock(tmp_path).acquire()
    try:
        text = (tmp_path / "job.lock").read_text()
        assert f"pid {os.getpid()}" in text and "host " in text
        started = time.time()
        with pytest.raises(RunFolderError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()  # a second open file description: refused at once
        assert time.time() - started < 1
    finally:
        lock.release()


def test_diverged_runs_name_the_checkpoint_to_continue_from(tmp_path):
    from alexnet2012.training.run import resume_advice

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    assert "No checkpoint was saved yet" in resume_advice(run_dir)
    rows = {2: 0.8, 4: 0.9, 6: 30.0, 8: 425.0}  # the loss rose after step 4
    (run_dir / "metrics.jsonl").write_text(
        "".join(f'{{"step": {s}, "train/loss": {v}}}\n' for s, v in rows.items())
    )
    for step in (4, 8):
        (run_dir / "checkpoints" / f"ckpt-{step:08d}.pt").write_bytes(b"x")
    advice = resume_advice(run_dir)
    assert "step 8 (training loss 425), step 4 (training loss 0.9)" in advice
    assert "so that ckpt-00000004.pt is the newest" in advice
    rows[8] = 1.2  # still near the lowest: continue from the newest
    (run_dir / "metrics.jsonl").write_text(
        "".join(f'{{"step": {s}, "train/loss": {v}}}\n' for s, v in rows.items())
    )
    assert resume_advice(run_dir).endswith(f"alexnet2012 train --resume {run_dir} train.lr=...")
    (run_dir / "config.yaml").write_text("train:\n  lr: 0.05\n")  # the lr to lower is known
    assert resume_advice(run_dir).endswith(f"alexnet2012 train --resume {run_dir} train.lr=0.005")
    rows.update({4: 1.7, 8: 425.0})  # each kept checkpoint saved after the loss passed 2 x 0.8
    (run_dir / "metrics.jsonl").write_text(
        "".join(f'{{"step": {s}, "train/loss": {v}}}\n' for s, v in rows.items())
    )
    advice = resume_advice(run_dir)
    assert "None is usable" in advice and "--resume" not in advice
    assert advice.endswith(f"alexnet2012 train --config {run_dir / 'config.yaml'} "
                           f"run.dir={run_dir}-lr0.005 train.lr=0.005")  # fmt: skip


def test_a_divergence_with_no_usable_checkpoint_says_how_to_start_again(tmp_path):
    """train.lr=1 keeps only checkpoints saved after the loss rose (a resume from either fails
    the same way at any rate): the message says so and gives the command that starts again,
    which trains to the end."""
    run_dir = tmp_path / "run"
    # every step logged: step 1's loss (before any update) is the lowest, so the checkpoints,
    # saved after lr 1 has thrown the loss up, are judged against it whatever path it takes
    issue = ["data.name=synthetic", "train.device=cpu", "wandb.mode=disabled", "train.lr=1",
             "train.checkpoint_every=2", "train.log_every=1", f"run.dir={run_dir}"]  # fmt: skip
    with pytest.raises(loop.TrainingError) as err:
        loop.run(load_config(DEBUG, issue))
    text = str(err.value)
    assert checkpoint.checkpoints(run_dir) and "None is usable" in text, text
    command = text.split("start again in a new folder: ")[1].split()
    assert command[:4] == ["alexnet2012", "train", "--config", str(run_dir / "config.yaml")]
    assert command[4:] == [f"run.dir={run_dir}-lr0.1", "train.lr=0.1"]
    summary = loop.run(load_config(command[3], command[4:]))
    assert summary["steps"] == 16 and summary["final_val_loss"] < 2 * math.log(10), summary


def _full_on_rank0(rank, run_dir):
    if rank == 0:  # only rank 0 writes checkpoints; its disk is full
        checkpoint.torch.save = enospc
    env = torchrun.mesh_env(rank, 2, rank, torch.device("cpu"), "gloo")
    try:
        loop.run(cfg_for(run_dir, "train.max_steps=2"), env=env)
    except DiskFullError as e:
        return str(e)
    return "finished"


def test_under_two_ranks_the_other_rank_is_told_the_disk_is_full(tmp_path):
    messages = run_ranks(_full_on_rank0, 2, tmp_path, args=(str(tmp_path / "run"),))
    assert messages[0] == messages[1], messages  # the same words, not "the other rank died"
    assert "no space left on the device of" in messages[1] and "ckpt-00000002.pt" in messages[1]

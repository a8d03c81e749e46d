"""A disk that is full at the start of a run, or before its first checkpoint, on a real small
filesystem (a tmpfs of 1 MiB, mounted when the tests run as root; skipped otherwise).

Either way: exit 3, one line naming the path and the free space, the advice that works from
there (start again with the same command), and nothing left that blocks that command; under
two ranks, both stop with those words.
"""

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest
import torch
from spawn import run_ranks

from alexnet2012 import cli, files
from alexnet2012.config import load_config
from alexnet2012.control import torchrun
from alexnet2012.files import DiskFullError
from alexnet2012.training import checkpoint, loop

ROOT = Path(__file__).resolve().parents[2]
DEBUG = str(ROOT / "configs" / "debug.yaml")
SMALL = ["data.name=synthetic", "data.synthetic_size=64", "train.batch_size=16",
         "wandb.mode=disabled", "data.train_subset=0", "data.test_subset=0",
         "train.epochs=1", "train.max_steps=1"]  # fmt: skip


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs at ``tmp_path/disk``, unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)]
    result = subprocess.run(mount, capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` up to ``leave`` bytes free; the filler file."""
    filler = disk / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > leave:
            f.write(b"\0" * 1024)
            f.flush()
    return filler


def train(run_dir: Path, capsys) -> tuple[int, str]:
    code = cli.main(["train", "--config", DEBUG, *SMALL, f"run.dir={run_dir}"])
    err = [line for line in capsys.readouterr().err.splitlines() if "alexnet2012 train" in line]
    return code, "\n".join(err)


def test_a_disk_full_at_the_start(small_disk, capsys):
    run_dir = small_disk / "run"
    run_dir.mkdir()
    filler = fill(small_disk, 0)
    code, err = train(run_dir, capsys)
    assert code == 3 and "\n" not in err, err
    assert f"no space left on the device of {run_dir} writing job.lock (0 KiB free there)" in err
    assert "start the run again with the same command" in err and "--resume" not in err
    assert list(run_dir.iterdir()) == []  # no empty job.lock left behind
    filler.unlink()
    code, err = train(run_dir, capsys)
    assert code == 0 and checkpoint.checkpoints(run_dir), err


def test_a_disk_full_before_the_first_checkpoint(small_disk, capsys):
    run_dir = small_disk / "run"
    run_dir.mkdir()
    filler = fill(small_disk, 8 * 1024)
    code, err = train(run_dir, capsys)
    assert code == 3 and "\n" not in err, err
    assert f"no space left on the device of {run_dir}" in err and "KiB free there" in err
    assert "start the run again with the same command" in err and "--resume" not in err
    assert not checkpoint.checkpoints(run_dir)
    left = {p.name for p in run_dir.iterdir()}
    assert not left & {"config.yaml", "metrics.jsonl", "summary.json"}, left
    filler.unlink()
    code, err = train(run_dir, capsys)  # the same command: no --replace needed
    assert code == 0 and checkpoint.checkpoints(run_dir), err


def test_resume_without_a_checkpoint_gives_the_command_that_works(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 1\n")
    assert cli.main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    again = f"alexnet2012 train --config {run_dir / 'config.yaml'} run.dir={run_dir} --replace"
    assert again in err


def _config_full_on_rank0(rank, run_dir):
    if rank == 0:  # config.yaml, the first file the run writes, finds no space

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        files._write = full
    env = torchrun.mesh_env(rank, 2, rank, torch.device("cpu"), "gloo")
    try:
        loop.run(load_config(DEBUG, [*SMALL, f"run.dir={run_dir}"]), env=env)
    except DiskFullError as e:
        return str(e)
    return "finished"


def test_under_two_ranks_a_full_disk_at_the_start_stops_both_with_its_words(tmp_path):
    run_dir = tmp_path / "run"
    messages = run_ranks(_config_full_on_rank0, 2, tmp_path, args=(str(run_dir),))
    assert messages[0] == messages[1], messages  # not "the other rank died"
    assert "writing config.yaml" in messages[0] and "start the run again" in messages[0]
    assert not (run_dir / "config.yaml").exists() and not (run_dir / "metrics.jsonl").exists()


def test_every_writer_names_its_file_when_the_disk_is_full(tmp_path, monkeypatch):
    """files.writing turns ENOSPC (also inside a RuntimeError's chain) into the one message;
    the metrics log and the refused-job record go through it (the lock and the atomic writes:
    the tests of job.lock and config.yaml above)."""
    full = OSError(errno.ENOSPC, "No space left on device")
    for raised in (full, RuntimeError("torch.save failed")):
        raised.__cause__ = full if raised is not full else None
        with pytest.raises(DiskFullError, match=f"of {tmp_path} writing x.bin \\(.* free there"):
            with files.writing(tmp_path / "x.bin"):
                raise raised
    with pytest.raises(PermissionError), files.writing(tmp_path / "x.bin"):
        raise PermissionError(errno.EACCES, "denied")

    class FullFile:
        def write(self, _):
            raise full

    from alexnet2012.training.tracking import RunLogger

    logger = RunLogger(tmp_path)
    logger._file = FullFile()
    with pytest.raises(DiskFullError, match="writing metrics.jsonl"):
        logger.log({"loss": 1.0}, 1)
    monkeypatch.setattr("builtins.open", lambda *a, **k: FullFile.write(None, None))
    with pytest.raises(DiskFullError, match=f"writing {checkpoint.REFUSED_FILE}"):
        checkpoint.mark_refused(tmp_path, "job")

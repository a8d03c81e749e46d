"""Files from elsewhere cannot run code: every command that reads a checkpoint or a weights
file refuses a planted payload by name (or falls back to the previous checkpoint), and the
payload's side effect never happens; the project's own checkpoints of every kind still load."""

import logging
import shutil

import numpy as np
import pytest
import torch
from planted import Planted, plant_checkpoint, plant_npy, plant_pth, sign

from alexnet2012 import cli
from alexnet2012.config import load_config
from alexnet2012.nets.model import AlexNet2012
from alexnet2012.training import checkpoint, loop
from alexnet2012.training.checkpoint import CheckpointError

SMALL = [
    "data.name=synthetic", "data.synthetic_size=64", "train.batch_size=16", "train.max_steps=4",
    "train.checkpoint_every=2", "wandb.mode=disabled", "model.input_size=63",
    "model.widths=[16,32,48,48,32,64,64]", "data.test_subset=0", "data.train_subset=0",
]  # fmt: skip
REFUSED = "refused, it holds pickled builtins.getattr, pathlib.Path, pathlib.PosixPath"


def files(folder) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A finished small run with checkpoints at steps 2 and 4."""
    run_dir = tmp_path_factory.mktemp("saved") / "run"
    loop.run(load_config("configs/debug.yaml", [*SMALL, f"run.dir={run_dir}"]))
    assert [checkpoint.step_of(p) for p in checkpoint.checkpoints(run_dir)] == [4, 2]
    return run_dir


@pytest.fixture
def planted(saved, tmp_path):
    """A copy of the run whose newest checkpoint carries the payload, with a matching sidecar;
    (run folder, the marker file the payload would create)."""
    run_dir, marker = shutil.copytree(saved, tmp_path / "copy"), tmp_path / "PWNED"
    newest = run_dir / "checkpoints" / "ckpt-00000004.pt"
    plant_checkpoint(newest, marker, like=newest)
    return run_dir, marker


def one_error(capsys, argv: list[str]) -> str:
    """The one error line of a command that ends with exit status 2."""
    assert cli.main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1, err
    return err[0]


def only_planted(run_dir):
    """Leave the planted newest checkpoint alone in ``run_dir``."""
    for p in (run_dir / "checkpoints").glob("ckpt-00000002.pt*"):
        p.unlink()


def test_load_refuses_with_and_without_sidecar(planted):
    run_dir, marker = planted
    path = run_dir / "checkpoints" / "ckpt-00000004.pt"
    with pytest.raises(CheckpointError, match=f"ckpt-00000004.pt: {REFUSED}"):
        checkpoint.load(path)
    (run_dir / "checkpoints" / "ckpt-00000004.pt.sha256").unlink()
    with pytest.raises(CheckpointError, match=f"ckpt-00000004.pt: {REFUSED}"):
        checkpoint.load(path)
    assert not marker.exists()


def test_resume_falls_back_to_the_previous_checkpoint(planted, caplog):
    run_dir, marker = planted
    with caplog.at_level(logging.WARNING, logger="alexnet2012.training.checkpoint"):
        assert cli.main(["train", "--resume", str(run_dir), "wandb.mode=disabled"]) == 0
    assert f"ckpt-00000004.pt: {REFUSED}" in caplog.text  # skipped as damaged
    assert checkpoint.load(run_dir / "checkpoints" / "ckpt-00000004.pt")["step"] == 4
    assert not marker.exists()


def test_resume_with_only_a_planted_checkpoint_is_refused_untouched(planted, capsys):
    run_dir, marker = planted
    only_planted(run_dir)
    before = files(run_dir)
    err = one_error(capsys, ["train", "--resume", str(run_dir), "wandb.mode=disabled"])
    assert "ckpt-00000004.pt: " + REFUSED in err, err
    assert files(run_dir) == before and not marker.exists()


@pytest.mark.parametrize("command", ["kernels", "neighbours"])
def test_reports_refuse_a_planted_checkpoint(planted, tmp_path, capsys, command):
    run_dir, marker = planted
    only_planted(run_dir)
    extra = ["--queries", "1", "--k", "1", "--limit", "8"] if command == "neighbours" else []
    err = one_error(capsys, [command, str(run_dir), "--out", str(tmp_path / "out"), *extra])
    assert "ckpt-00000004.pt: " + REFUSED in err, err
    assert not marker.exists()


def test_convert_refuses_a_planted_pth(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    src = plant_pth(tmp_path / "alexnet.pth", marker)
    args = [str(src), str(tmp_path / "out.pth"), "--from", "torchvision"]
    err = one_error(capsys, ["convert", *args])
    assert f"alexnet.pth: {REFUSED}" in err, err
    assert not marker.exists() and not (tmp_path / "out.pth").exists()


def test_convert_reads_a_pickled_npy_only_with_the_flag(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    src = plant_npy(tmp_path / "bvlc.npy", marker)
    args = [str(src), str(tmp_path / "out.pt"), "--from", "caffe"]
    err = one_error(capsys, ["convert", *args])
    assert "bvlc.npy: holds pickled Python objects" in err and "--allow-pickle" in err, err
    assert not marker.exists()
    npz = tmp_path / "bvlc.npz"  # an archive with a pickled member
    np.savez(npz, conv1_weights=np.array([Planted(marker)], dtype=object))
    assert cli.main(["convert", str(npz), str(tmp_path / "out.pt"), "--from", "caffe"]) == 2
    assert "bvlc.npz: holds pickled Python objects" in capsys.readouterr().err
    assert not marker.exists()
    # an old port the user trusts: a pickled dict of Caffe's blobs
    with torch.device("meta"):
        net = AlexNet2012(10, preset="caffe", widths=(8, 16, 16, 16, 8, 32, 32))
    plant_npy(src, marker, weights={k: torch.zeros(v.shape).numpy() for k, v in
                                    net.state_dict().items()})  # fmt: skip
    assert cli.main(["convert", *args]) == 2  # still refused without the flag
    assert cli.main(["convert", *args, "--allow-pickle"]) == 0
    assert "conv1.weight" in torch.load(tmp_path / "out.pt", weights_only=True)


def test_an_old_format_checkpoint_still_resumes(saved, tmp_path):
    """Torch's old non-zip serialisation, the list of CUDA RNG states and the state without
    ``last_val_step`` that earlier versions wrote, all plain: read weights-only."""
    run_dir = shutil.copytree(saved, tmp_path / "old")
    only_planted(run_dir)  # leaves step 4 alone
    path = run_dir / "checkpoints" / "ckpt-00000004.pt"
    data = torch.load(path, weights_only=True)
    data["cuda_rng"] = []
    data["state"].pop("last_val_step")
    torch.save(data, path, _use_new_zipfile_serialization=False)
    sign(path)
    assert checkpoint.load(path)["step"] == 4
    cmd = ["train", "--resume", str(run_dir), "train.epochs=2", "train.max_steps=6"]
    assert cli.main(cmd) == 0
    assert checkpoint.load_latest(run_dir)[0]["step"] == 6


KINDS = [["model.preset=paper"], ["model.preset=caffe"], ["train.schedule=c12"],
         ["train.schedule=plateau"], ["model.name=streamlined", "model.input_size=95"],
         ["model.name=torchvision", "model.input_size=95"]]  # fmt: skip


@pytest.mark.parametrize("extra", KINDS, ids=lambda e: e[0])
def test_every_kind_of_checkpoint_loads_weights_only(tmp_path, extra):
    run_dir = tmp_path / "run"
    cfg = [*SMALL, "train.max_steps=1", "train.checkpoint_every=0", *extra, f"run.dir={run_dir}"]
    loop.run(load_config("configs/debug.yaml", cfg))
    path = checkpoint.checkpoints(run_dir)[0]
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    assert checkpoint.load(path)["step"] == 1

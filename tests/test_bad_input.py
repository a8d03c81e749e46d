"""Bad input through the real command line: one clear message, exit status 2, nothing lost.

Each case runs ``python -m alexnet2012 ...`` in a subprocess and checks the words of the message
(the problem and what to do), the exit status, that no traceback is printed, and that the files
a user already has (a run folder, a prepared store) are byte-for-byte unchanged. The cases run a
few at a time: each process spends seconds importing torch.
"""

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from planted import plant_checkpoint

from alexnet2012.config import load_config
from alexnet2012.data.idx import write_idx
from alexnet2012.training import loop

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")
SMALL = ["data.name=synthetic", "data.synthetic_size=128", "train.batch_size=16",
         "wandb.mode=disabled", "data.train_subset=0", "data.test_subset=0"]  # fmt: skip
TIMEOUT = 120
NAMES = [
    "data folder missing", "data folder empty", "store folder missing", "store folder empty",
    "IDX wrong size", "IDX wrong magic", "image folder without classes",
    "train/val classes differ", "unknown key", "wrong type", "unknown preset", "unknown layer",
    "batch size 0", "world size 3", "resume, other architecture",
    "checkpoint from another project", "resume a folder that is no run",
    "new run over a saved one", "too few images for one batch", "learning rate nan",
    "synthetic size negative", "store without data.root", "prepare size too small",
    "prepare into a file", "bench input too small", "bench --json into a file",
    "compare a damaged summary", "store metadata damaged", "config is a folder",
    "summary classes negative", "restartable job without run.dir", "resume, planted payload",
]  # fmt: skip
STRIP = {"ALEXNET2012_FAULT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
         "MASTER_ADDR", "MASTER_PORT"}  # fmt: skip


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` and its bytes ({} if there is no folder)."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fashion_files(folder: Path) -> Path:
    """A tiny but valid set of the four Fashion-MNIST IDX files."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("t10k", 10)):
        write_idx(folder / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    return folder


def image_tree(src: Path, train_classes, val_classes) -> Path:
    for split, classes in (("train", train_classes), ("val", val_classes)):
        (src / split).mkdir(parents=True)
        for c in classes:
            (src / split / c).mkdir()
            (src / split / c / "img0.jpg").write_bytes(b"not decoded: the check comes first")
    return src


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    """A finished small run with checkpoints at steps 6 and 8 (the one users must not lose)."""
    run_dir = tmp_path_factory.mktemp("saved") / "run"
    loop.run(load_config(DEBUG, [*SMALL, f"run.dir={run_dir}", "train.checkpoint_every=3"]))
    return run_dir


def cases(tmp: Path, saved: Path) -> dict:
    """name -> (argv after ``alexnet2012``, extra env, words the message must hold, watched
    folder that must stay unchanged (or must not appear, for a new run.dir))."""
    runs = {}
    for name in ("keys", "type", "preset", "layer", "batch", "arch", "foreign", "empty_data",
                 "idx_size", "fresh", "planted"):  # fmt: skip
        runs[name] = shutil.copytree(saved, tmp / f"run_{name}")
    ckpts = runs["foreign"] / "checkpoints"
    for p in ckpts.iterdir():
        p.unlink()
    torch.save({"state_dict": {"features.0.weight": torch.ones(2)}}, ckpts / "ckpt-00000009.pt")
    planted = runs["planted"] / "checkpoints"  # the payload would touch a file in the folder
    for p in sorted(planted.glob("ckpt-*.pt"))[:-1]:
        p.unlink()
        (planted / f"{p.name}.sha256").unlink()
    plant_checkpoint(planted / "ckpt-00000008.pt", runs["planted"] / "PWNED",
                     like=planted / "ckpt-00000008.pt")  # fmt: skip
    idx_size = fashion_files(tmp / "idx_size")
    images = idx_size / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    idx_magic = fashion_files(tmp / "idx_magic")
    shutil.copy(idx_magic / "train-labels-idx1-ubyte", idx_magic / "train-images-idx3-ubyte")
    (tmp / "empty").mkdir()
    store = tmp / "store"  # a prepared store already there: prepare must not touch it
    store.mkdir()
    (store / "meta.json").write_text('{"format": 1}\n')
    no_classes = tmp / "no_classes"
    (no_classes / "train").mkdir(parents=True)
    mismatch = image_tree(tmp / "mismatch", ["cat", "dog"], ["cat", "cow"])
    other = tmp / "other_project_run"
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints" / "model_best.pth").write_bytes(b"\x80\x04not ours")
    new = tmp / "never_created"
    a_file = tmp / "a_file.txt"
    a_file.write_text("a user's file\n")
    damaged = shutil.copytree(saved, tmp / "run_damaged")
    (damaged / "summary.json").write_text("[1, 2]\n")
    bad_meta = tmp / "bad_meta"
    bad_meta.mkdir()
    (bad_meta / "meta.json").write_text("[1]\n")

    def fresh(*extra):
        return ["train", "--config", DEBUG, *extra, f"run.dir={new}"]

    def resume(name, *extra):
        return ["train", "--resume", str(runs[name]), *extra]

    ws3 = {"WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "29999"}  # fmt: skip
    return {
        "data folder missing": (fresh(f"data.root={tmp / 'nope'}"), {},
                                ["data.root", "no such folder", "Set data.root"], new),
        "data folder empty": (resume("empty_data", "data.name=fashion_mnist",
                                     f"data.root={tmp / 'empty'}"), {},
                              ["holds none of the four Fashion-MNIST IDX files", "Set data.root"],
                              runs["empty_data"]),
        "store folder missing": (fresh("data.name=imagefolder", f"data.root={tmp / 'nope'}"), {},
                                 ["no such folder", "alexnet2012 prepare SRC DST"], new),
        "store folder empty": (fresh("data.name=imagefolder", f"data.root={tmp / 'empty'}"), {},
                               ["no prepared image store", "alexnet2012 prepare SRC DST"], new),
        "IDX wrong size": (resume("idx_size", "data.name=fashion_mnist", f"data.root={idx_size}"),
                           {}, ["train-images-idx3-ubyte: truncated", "fetch the data set again"],
                           runs["idx_size"]),
        "IDX wrong magic": (fresh(f"data.root={idx_magic}"), {},
                            ["magic number 2049 is not 2051", "fetch the data set again"], new),
        "image folder without classes": (["prepare", str(no_classes), str(store)], {},
                                         ["no class folders", "one folder per class"], store),
        "train/val classes differ": (["prepare", str(mismatch), str(store)], {},
                                     ["class folder 'cow'", "need the same class names"], store),
        "unknown key": (resume("keys", "train.bogus=1"), {},
                        ["unknown key 'train.bogus'", "known keys here"], runs["keys"]),
        "wrong type": (resume("type", "train.epochs=three"), {},
                       ["train.epochs: expected int, got 'three'"], runs["type"]),
        "unknown preset": (resume("preset", "model.preset=alexnet"), {},
                           ["model.preset: 'alexnet' is not one of"], runs["preset"]),
        "unknown layer": (resume("layer", "model.cross=[conv9,fc8]"), {},
                          ["model.cross: unknown layer 'conv9'; choose from"], runs["layer"]),
        "batch size 0": (resume("batch", "train.batch_size=0"), {},
                         ["train.batch_size must be at least 1"], runs["batch"]),
        "world size 3": (fresh(*SMALL), ws3, ["WORLD_SIZE=3", "--nproc_per_node=2"], new),
        "resume, other architecture": (resume("arch", "model.widths=[32,64,96,96,64,128,128]"),
                                       {}, ["cannot change what the run computes",
                                            "model.widths is [16,32,48,48,32,64,64] in the run",
                                            "Drop those overrides", "train --from"],
                                       runs["arch"]),
        "checkpoint from another project": (resume("foreign"), {},
                                            ["ckpt-00000009.pt: not an alexnet2012 checkpoint",
                                             "start a new run.dir"], runs["foreign"]),
        "resume a folder that is no run": (["train", "--resume", str(other)], {},
                                           ["no config.yaml there; is it a run folder?"], other),
        "new run over a saved one": (["train", "--config", DEBUG, *SMALL,
                                      f"run.dir={runs['fresh']}"], {},
                                     ["already holds a run", "--resume"], runs["fresh"]),
        "too few images for one batch": (fresh(*SMALL, "data.synthetic_size=8"), {},
                                         ["make no full batch of 16", "lower train.batch_size"],
                                         new),
        "learning rate nan": (fresh(*SMALL, "train.lr=nan"), {},
                              ["train.lr must be a positive number, got nan"], new),
        "synthetic size negative": (fresh(*SMALL, "data.synthetic_size=-5"), {},
                                    ["data.synthetic_size must be at least 1"], new),
        "store without data.root": (fresh("data.name=imagefolder"), {},
                                    ["data.root is empty", "alexnet2012 prepare SRC DST"], new),
        "prepare size too small": (["prepare", str(mismatch), str(new), "--size", "0"], {},
                                   ["--size", "must be at least 32, got 0"], new),
        "prepare into a file": (["prepare", str(tmp / "mismatch"), str(a_file)], {},
                                [f"DST {a_file} is a file"], tmp / "mismatch"),
        "bench input too small": (["bench", "--config", DEBUG, *SMALL, "model.input_size=32",
                                   "--executions", "emulated"], {},
                                  ["input size 32 is too small"], new),
        "bench --json into a file": (["bench", "--config", DEBUG, *SMALL, "--executions",
                                      "emulated", "--json", str(a_file / "x.json")], {},
                                     ["--json", "cannot write there"], tmp / "mismatch"),
        "compare a damaged summary": (["compare", str(damaged), "--out", str(new)], {},
                                      ["summary.json: holds a list", "give run folders"], new),
        "store metadata damaged": (fresh("data.name=imagefolder", f"data.root={bad_meta}"), {},
                                   ["meta.json: not the metadata", "rerun `alexnet2012 prepare"],
                                   bad_meta),
        "config is a folder": (["train", "--config", str(tmp)], {},
                               [f"config file {tmp} is a folder"], new),
        "summary classes negative": (["summary", "--classes", "-5"], {},
                                     ["--classes", "must be at least 0, got -5"], new),
        "restartable job without run.dir": (["train", "--config", DEBUG, *SMALL],
                                            {"TORCHELASTIC_MAX_RESTARTS": "2"},
                                            ["torchrun --max-restarts needs run.dir="], new),
        "resume, planted payload": (resume("planted"), {},
                                    ["ckpt-00000008.pt: refused, it holds pickled",
                                     "pathlib.Path", "start a new run.dir"], runs["planted"]),
    }  # fmt: skip


def cli(args, env_extra, timeout=TIMEOUT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in STRIP and "TORCHELASTIC" not in k}
    env.update(OMP_NUM_THREADS="1", ALEXNET2012_NO_BAR="1", PYTHONPATH=str(ROOT), **env_extra)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, saved_run) -> dict:
    """Every case run once, three at a time: name -> (result, words, before, after)."""
    tmp = tmp_path_factory.mktemp("bad_input")
    table = cases(tmp, saved_run)
    assert list(table) == NAMES
    before = {name: snapshot(watched) for name, (_, _, _, watched) in table.items()}
    jobs = {name: (["-m", "alexnet2012", *argv], env) for name, (argv, env, _, _) in table.items()}
    jobs["torchrun --nproc_per_node=3"] = (
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3", "-m", "alexnet2012",
         "train", "--config", DEBUG, *SMALL, f"run.dir={tmp / 'never_created'}"], {},
    )  # fmt: skip
    with ThreadPoolExecutor(3) as pool:
        futures = {name: pool.submit(cli, *job) for name, job in jobs.items()}
        results = {name: f.result() for name, f in futures.items()}
    return {
        name: (results[name], words, before[name], snapshot(watched), watched)
        for name, (_, _, words, watched) in table.items()
    } | {"torchrun": results["torchrun --nproc_per_node=3"]}


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_one_message_exit_2_nothing_lost(outcomes, name):
    result, words, before, after, watched = outcomes[name]
    err = result.stderr
    assert result.returncode == 2, (result.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("alexnet2012 "), err[-3000:]
    for word in words:
        assert word in errors[0], (word, errors[0])
    assert after == before, f"{watched} changed"
    if not before:
        assert not watched.exists(), f"{watched} was created"


def test_torchrun_with_three_ranks_is_refused_by_every_rank(outcomes):
    """torchrun itself exits 1 and prints its own report; the ranks exit 2 with the message
    (torchrun stops the others once the first has exited, so not every rank may get to say it)."""
    result = outcomes["torchrun"]
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert out.count("alexnet2012 train: error: model parallelism needs 2 ranks") >= 1, out[-3000:]
    assert "--nproc_per_node=2" in out and "exitcode  : 2" in out
    ours = [line for line in out.splitlines() if 'File "' in line and "/alexnet2012/" in line]
    assert not ours, ours  # the only traceback is torchrun's own report

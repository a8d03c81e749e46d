"""prepare under faults: killed mid-way and resumed, a full disk, input that is not ILSVRC-2012.

Each failure is one line naming the problem and exit 2 (the CLI), and leaves no store that
training would accept; a killed parallel run, rerun, gives a store byte-identical to an unbroken
one.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from imagetree import ilsvrc_images, tar_bytes, write_archives

from alexnet2012 import cli
from alexnet2012.data import DataError, Store, writer
from alexnet2012.data.prepare import prepare_main

ROOT = Path(__file__).resolve().parents[2]
KILLED_RUN = """
import os, signal, sys
from alexnet2012.data.prepare import prepare_main

def kill_after_two_chunks(split, done):
    if done >= 8:
        os.kill(os.getpid(), signal.SIGKILL)

prepare_main(sys.argv[1], sys.argv[2], size=32, workers=2, chunk=4,
             on_commit=kill_after_two_chunks)
"""


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> Path:
    return write_archives(tmp_path_factory.mktemp("ilsvrc") / "src", ilsvrc_images())


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_killed_parallel_prepare_resumes_identically(archives, tmp_path):
    dst = tmp_path / "dst"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(archives), str(dst)],
        cwd=ROOT,
        start_new_session=True,
        stderr=subprocess.PIPE,
    )
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its pool's workers, if any outlived it
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    with pytest.raises(DataError, match="unfinished"):
        Store(dst)
    commits = []
    summary = prepare_main(
        str(archives),
        str(dst),
        size=32,
        workers=2,
        chunk=4,
        on_commit=lambda s, d: commits.append(d),
    )
    assert summary["resumed"] and commits[0] == 12  # the two chunks done were not redone
    prepare_main(str(archives), str(tmp_path / "unbroken"), size=32, workers=2, chunk=4)
    assert files_of(dst) == files_of(tmp_path / "unbroken")  # byte for byte


def cli_prepare(src: Path, dst: Path, capsys) -> str:
    """Run ``alexnet2012 prepare``; expect exit 2 and return its error line."""
    assert cli.main(["prepare", str(src), str(dst), "--size", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("alexnet2012 prepare: error: ")
    return err


def test_disk_full_is_one_line_and_resumable(archives, tmp_path, monkeypatch, capsys):
    real, writes = writer._pwrite, []

    def fills_up(f, rows, offset):
        writes.append(offset)
        if len(writes) > 2:  # the training rows fit; the validation rows do not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(f, rows, offset)

    monkeypatch.setattr(writer, "_pwrite", fills_up)
    err = cli_prepare(archives, tmp_path / "dst", capsys)
    assert "disk full (No space left on device)" in err and "rerun the same command" in err
    with pytest.raises(DataError, match="unfinished"):
        Store(tmp_path / "dst")
    monkeypatch.setattr(writer, "_pwrite", real)  # chunk=1: the first run's 1024 stays in force
    summary = prepare_main(str(archives), str(tmp_path / "dst"), size=32, workers=0, chunk=1)
    assert summary["resumed"] and summary["val"] == 8
    prepare_main(str(archives), str(tmp_path / "unbroken"), size=32, workers=0)
    assert files_of(tmp_path / "dst") == files_of(tmp_path / "unbroken")


def _not_ilsvrc(root: Path) -> None:
    (root / "ILSVRC2012_img_train.tar").write_bytes(tar_bytes({"holiday/beach.jpg": b"x"}))


def _not_a_tar(root: Path) -> None:
    (root / "ILSVRC2012_img_train.tar").write_bytes(b"not a tar " * 100)


def _cut_train_tar(root: Path) -> None:
    path = root / "ILSVRC2012_img_train.tar"
    path.write_bytes(path.read_bytes()[:3000])


def _val_not_ilsvrc(root: Path) -> None:
    (root / "ILSVRC2012_img_val.tar").write_bytes(tar_bytes({"val/beach.jpg": b"x"}))


BAD = {  # name: (damage done to the archives, words the error line must hold)
    "train tar not ILSVRC": (_not_ilsvrc, ["'holiday/beach.jpg' is not a per-synset tar"]),
    "train tar not a tar": (_not_a_tar, ["ILSVRC2012_img_train.tar: not a readable tar"]),
    "train tar cut short": (_cut_train_tar, ["truncated or damaged", "download it again"]),
    "val tar not ILSVRC": (_val_not_ilsvrc, ["'val/beach.jpg' is not an ILSVRC-2012 validation"]),
    "ground truth short": ("drop", ["has 7 labels, but", "holds 8 validation images"]),
    "val without devkit": ("no devkit", ["no devkit to label them", "ILSVRC2012_devkit_t12"]),
    "no scipy": ("no scipy", ["meta.mat needs scipy; pip install scipy"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2(case, tmp_path, monkeypatch, capsys):
    damage, words = BAD[case]
    images, src = ilsvrc_images(), tmp_path / "src"
    write_archives(src, images, devkit=damage != "no devkit", drop=1 if damage == "drop" else 0)
    if callable(damage):
        damage(src)
    if damage == "no scipy":
        monkeypatch.setitem(sys.modules, "scipy", None)
        monkeypatch.setitem(sys.modules, "scipy.io", None)
    err = cli_prepare(src, tmp_path / "dst", capsys)
    for w in words:
        assert w in err, err
    assert not (tmp_path / "dst" / "meta.json").exists()
    with pytest.raises(DataError):
        Store(tmp_path / "dst")

"""Checkpoints: round trip, retention, corruption detected and skipped, foreign files refused."""

import hashlib
import logging

import pytest
import torch

from alexnet2012.training import checkpoint
from alexnet2012.training.checkpoint import (
    FORMAT,
    CheckpointError,
    checkpoints,
    load,
    load_latest,
    save,
)


def payload(step: int) -> dict:
    return {
        "model": {"conv1.weight": torch.full((4, 3), float(step)), "fc8.bias": torch.arange(5.0)},
        "optimizer": {"conv1.weight": {"momentum_buffer": torch.ones(4, 3)}},
        "schedule": {"drops": 1, "best": 0.25, "bad_epochs": 0},
        "epoch": step,
        "history": [0.5, 0.4],
        "note": "hello",
        "rng": torch.arange(6, dtype=torch.uint8),  # as torch.get_rng_state()
    }


def test_round_trip(tmp_path):
    path = save(tmp_path, payload(7), step=7)
    assert path == tmp_path / "checkpoints" / "ckpt-00000007.pt"
    data, found = load_latest(tmp_path)
    assert found == path and data["format"] == FORMAT
    assert data["epoch"] == 7 and data["note"] == "hello" and data["history"] == [0.5, 0.4]
    torch.testing.assert_close(data["model"]["conv1.weight"], torch.full((4, 3), 7.0))
    torch.testing.assert_close(data["rng"], torch.arange(6, dtype=torch.uint8))
    assert load(path)["schedule"] == {"drops": 1, "best": 0.25, "bad_epochs": 0}
    # the sidecar is in sha256sum format
    line = (path.parent / "ckpt-00000007.pt.sha256").read_text().split()
    assert len(line[0]) == 64 and line[1] == path.name


def test_empty_run_dir(tmp_path):
    assert load_latest(tmp_path) == (None, None)
    assert load_latest(tmp_path / "missing") == (None, None)


def test_keeps_only_the_newest_two(tmp_path):
    for step in (1, 2, 3, 10):
        save(tmp_path, payload(step), step=step)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == [
        "ckpt-00000003.pt",
        "ckpt-00000003.pt.sha256",
        "ckpt-00000010.pt",
        "ckpt-00000010.pt.sha256",
    ]
    assert load_latest(tmp_path)[0]["epoch"] == 10
    save(tmp_path, payload(11), step=11, keep=1)
    assert [p.name for p in checkpoints(tmp_path)] == ["ckpt-00000011.pt"]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path):
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip], ids=["truncated", "flipped"])
def test_corrupt_newest_falls_back(tmp_path, caplog, damage):
    save(tmp_path, payload(1), step=1)
    bad = save(tmp_path, payload(2), step=2)
    damage(bad)
    with pytest.raises(CheckpointError, match="ckpt-00000002.pt: checksum mismatch"):
        load(bad)
    with caplog.at_level(logging.WARNING, logger="alexnet2012.training.checkpoint"):
        data, path = load_latest(tmp_path)
    assert path.name == "ckpt-00000001.pt" and data["epoch"] == 1
    assert "ckpt-00000002.pt" in caplog.text and "checksum mismatch" in caplog.text


def _sign(path):
    """A checksum file that matches ``path`` (written here, not by the module under test)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (path.parent / (path.name + ".sha256")).write_text(f"{digest}  {path.name}\n")


def test_unpicklable_with_matching_checksum(tmp_path, caplog):
    good = save(tmp_path, payload(1), step=1)
    bad = save(tmp_path, payload(2), step=2)
    bad.write_bytes(b"not a torch file at all")
    _sign(bad)
    with pytest.raises(CheckpointError, match="ckpt-00000002.pt: cannot be unpickled"):
        load(bad)
    with caplog.at_level(logging.WARNING):
        assert load_latest(tmp_path)[1] == good
    assert "cannot be unpickled" in caplog.text


def test_all_corrupt_gives_none(tmp_path, caplog):
    _truncate(save(tmp_path, payload(1), step=1))
    with caplog.at_level(logging.WARNING):
        assert load_latest(tmp_path) == (None, None)
    assert "ckpt-00000001.pt" in caplog.text


def test_foreign_torch_file_is_refused(tmp_path, caplog):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not an alexnet2012 checkpoint"):
        load(foreign)
    # even with a valid checksum next to it
    good = save(tmp_path, payload(1), step=1)
    impostor = good.parent / "ckpt-00000005.pt"
    torch.save({"model": {}}, impostor)
    _sign(impostor)
    with pytest.raises(CheckpointError, match="not an alexnet2012 checkpoint"):
        load(impostor)
    with caplog.at_level(logging.WARNING):
        assert load_latest(tmp_path)[1] == good
    assert "ckpt-00000005.pt" in caplog.text


def test_missing_sidecar_is_reported(tmp_path):
    path = save(tmp_path, {"w": torch.zeros(2)}, step=3)
    (path.parent / (path.name + ".sha256")).unlink()
    with pytest.raises(CheckpointError, match="ckpt-00000003.pt: checksum file .* is missing"):
        load(path)


def test_leftover_tmp_files_are_ignored(tmp_path):
    good = save(tmp_path, payload(1), step=1)
    folder = good.parent
    (folder / "ckpt-00000009.pt.tmp").write_bytes(b"half-written")
    (folder / "ckpt-00000009.pt.sha256.tmp").write_text("0" * 64)
    (folder / "ckpt-00000008.pt.sha256").write_text("0" * 64)  # sidecar whose rename never came
    data, path = load_latest(tmp_path)
    assert path == good and data["epoch"] == 1
    assert [p.name for p in checkpoints(tmp_path)] == ["ckpt-00000001.pt"]
    save(tmp_path, payload(2), step=2)
    assert load_latest(tmp_path)[0]["epoch"] == 2
    left = sorted(p.name for p in folder.iterdir())  # the next save cleared what the crash left
    assert left == [f"ckpt-0000000{s}.pt{x}" for s in (1, 2) for x in ("", ".sha256")], left


def test_a_restart_resumes_only_the_run_its_job_started(tmp_path):
    """torchrun job ids: the job that started a folder resumes it; a later job refused there
    under the same id (a reused --rdzv-id) does not, until a job starts the folder afresh."""
    assert not checkpoint.resumable_by(tmp_path, "x")  # nothing recorded
    checkpoint.mark_job(tmp_path, "x")
    assert checkpoint.resumable_by(tmp_path, "x") and not checkpoint.resumable_by(tmp_path, "y")
    checkpoint.mark_refused(tmp_path, "y")
    assert checkpoint.resumable_by(tmp_path, "x")
    checkpoint.mark_refused(tmp_path, "x")  # job x again, refused: the id was reused
    assert not checkpoint.resumable_by(tmp_path, "x")
    checkpoint.mark_job(tmp_path, "x")  # a fresh start clears the refusals
    assert checkpoint.resumable_by(tmp_path, "x")

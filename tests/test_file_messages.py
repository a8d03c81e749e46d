"""Messages about a file name the file and say what to do (issue 25, point 6): a YAML section
that is not a mapping, a truncated config.yaml on resume, data.root at a file, an empty
checksum file beside a good checkpoint, a store at a file or with binary metadata. Most run
the command line in this process."""

import shutil
from pathlib import Path

import pytest

from alexnet2012 import cli
from alexnet2012.config import ConfigError, load_config
from alexnet2012.training import checkpoint, loop

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")
SMALL = ["data.name=synthetic", "data.synthetic_size=64", "train.batch_size=16",
         "wandb.mode=disabled", "data.train_subset=0", "data.test_subset=0",
         "train.epochs=1", "train.checkpoint_every=2"]  # fmt: skip


def error(argv, capsys) -> str:
    assert cli.main(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("messages") / "run"
    loop.run(load_config(DEBUG, [*SMALL, f"run.dir={run_dir}"]))  # checkpoints 2 and 4
    return run_dir


def test_a_section_that_is_not_a_mapping_names_its_file(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\ntrain: 5\n")
    line = error(["train", "--config", str(path)], capsys)
    assert f"config file {path}: train: expected a mapping of its keys" in line
    assert "got 5; write them indented under it, or give them as train.batch_size=" in line
    base = tmp_path / "base.yaml"  # in a file that another extends: that file is named
    base.write_text("model: [1, 2]\n")
    path.write_text("extends: base.yaml\nseed: 1\n")
    with pytest.raises(ConfigError, match=f"config file {base}: model: expected a mapping"):
        load_config(path)


def test_a_truncated_run_config_names_it_and_the_way_on(saved, tmp_path, capsys):
    run_dir = shutil.copytree(saved, tmp_path / "run")
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().split("data:")[0] + "data:\n")  # cut after "data:"
    line = error(["train", "--resume", str(run_dir)], capsys)
    assert f"config file {config}: data: expected a mapping of its keys" in line
    newest = checkpoint.checkpoints(run_dir)[0]
    assert f"alexnet2012 train --from {newest} run.dir={run_dir}-new" in line


def test_data_root_at_a_file_says_so(tmp_path, capsys):
    afile = tmp_path / "images.idx"
    afile.write_bytes(b"not a folder")
    argv = ["train", "--config", DEBUG, f"data.root={afile}", f"run.dir={tmp_path / 'r'}"]
    line = error(argv, capsys)
    assert f"data.root {afile}: is a file, not a folder" in line and "Set data.root" in line
    assert not (tmp_path / "r").exists()


def test_an_empty_checksum_file_is_not_called_corruption(saved, tmp_path, caplog):
    run_dir = shutil.copytree(saved, tmp_path / "run")
    newest = checkpoint.checkpoints(run_dir)[0]
    sidecar = newest.with_name(newest.name + ".sha256")
    sidecar.write_text("")
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load(newest)
    text = str(e.value)
    assert f"{newest}: its checksum file {sidecar.name} is empty" in text
    assert "corrupt" not in text and f"sha256sum {newest.name} > {sidecar.name}" in text
    _, path = checkpoint.load_latest(run_dir)  # a resume falls back to the previous one
    assert path == checkpoint.checkpoints(run_dir)[1] and "is empty" in caplog.text


def test_a_store_at_a_file_or_with_binary_metadata_is_named(tmp_path):
    from alexnet2012.data.errors import DataError
    from alexnet2012.data.store import Store

    afile = tmp_path / "store.npy"
    afile.write_bytes(b"\x93NUMPY")
    with pytest.raises(DataError, match=f"data.root {afile}: is a file, not a folder; set"):
        Store(afile)
    store = tmp_path / "store"
    store.mkdir()
    (store / "meta.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe binary")
    with pytest.raises(DataError) as e:
        Store(store)
    assert f"{store / 'meta.json'}: not valid JSON" in str(e.value)
    assert "rerun `alexnet2012 prepare SRC DST` into a new DST" in str(e.value)

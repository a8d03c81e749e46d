"""What --resume may change and what it refuses (training/contract.py), and --from's new run.

Every key of the config that a resume may not change is refused by name with both values; the
issue's cases (batch size, seed, data, a budget below the checkpoint, run.dir) through a real
run; a lengthened run adds no duplicate line; a variant starts in a new folder that records it.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from alexnet2012 import cli
from alexnet2012.config import Config, ConfigError, flatten, load_config, to_dict
from alexnet2012.training import checkpoint, contract, loop

ROOT = Path(__file__).resolve().parents[2]
DEBUG = str(ROOT / "configs" / "debug.yaml")
SMALL = ["data.name=synthetic", "data.synthetic_size=64", "train.batch_size=16",
         "wandb.mode=disabled", "data.train_subset=0", "data.test_subset=0",
         "train.epochs=2", "train.log_every=2"]  # fmt: skip
KEYS = flatten(to_dict(Config()))
REFUSED = [k for k in KEYS if k != "run.dir" and not contract.may_change(k)]


def other(value):
    """A value unlike ``value`` of the same type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 3
    if isinstance(value, tuple):
        return (*value, "x")
    return f"{value}x"


def test_the_table_names_only_keys_that_exist():
    assert all(k in KEYS or k.endswith(".") for k in contract.MAY_CHANGE)
    for key in ("train.batch_size", "seed", "data.synthetic_size", "train.schedule"):
        assert key in REFUSED


@pytest.mark.parametrize("key", REFUSED)
def test_each_refused_key_is_named_with_both_values(key):
    was = to_dict(Config())
    now = to_dict(Config())
    section, _, name = key.rpartition(".")
    new = other(KEYS[key])
    (now[section] if section else now)[name] = list(new) if isinstance(new, tuple) else new
    assert contract.refused(was, now) == [(key, KEYS[key], new)]
    ckpt = Path("runs/a/checkpoints/ckpt-00000008.pt")
    with pytest.raises(ConfigError) as e:
        contract.refuse_changes(ckpt, was, now)
    text = str(e.value)
    assert f"{key} is {contract._value(KEYS[key])} in the run" in text
    assert f"{contract._value(new)} now" in text
    assert f"train --from {ckpt} run.dir=runs/a-variant {key}=" in text


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A run of 2 epochs stopped at step 4 (the end of its first), checkpoint at step 4."""
    run_dir = tmp_path_factory.mktemp("contract") / "run"
    loop.run(load_config(DEBUG, [*SMALL, f"run.dir={run_dir}", "train.max_steps=4"]))
    return run_dir


def files(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "job.lock"}  # fmt: skip


def resume(run_dir: Path, *overrides: str) -> dict:
    cfg = load_config(run_dir / "config.yaml", [*overrides, f"run.dir={run_dir}"])
    return loop.run(cfg, resume=True)


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.batch_size=8", "train.batch_size is 16 in the run, 8 now"),
        ("seed=5", "seed is 0 in the run, 5 now"),
        ("data.synthetic_size=256", "data.synthetic_size is 64 in the run, 256 now"),
        ("train.schedule=constant", "train.schedule is plateau in the run, constant now"),
        ("model.dropout=none", "model.dropout is paper in the run, none now"),
        ("train.max_steps=3", "the run is at step 4 but train.max_steps and train.epochs end it"),
    ],
)
def test_a_resume_that_would_rewrite_the_run_is_refused(saved, override, words):
    before = files(saved)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        resume(saved, override)
    assert files(saved) == before


def test_a_resume_of_an_ended_run_with_nothing_to_do_keeps_its_summary(saved):
    before = files(saved)
    with pytest.raises(ConfigError, match="already ended at step 4 .* larger train.max_steps"):
        resume(saved)
    assert files(saved) == before


def test_run_dir_is_refused_on_resume_and_names_the_way_on(saved, tmp_path, capsys):
    before = files(saved)
    code = cli.main(["train", "--resume", str(saved), f"run.dir={tmp_path / 'elsewhere'}"])
    err = capsys.readouterr().err
    assert code == 2 and f"run.dir={tmp_path / 'elsewhere'} would move it" in err
    assert "alexnet2012 train --from" in err and files(saved) == before
    assert not (tmp_path / "elsewhere").exists()
    contract.check_run_dir(str(saved), [f"run.dir={saved}/"])  # the same folder is fine


def test_lengthening_a_run_adds_no_duplicate_line(saved, tmp_path):
    run_dir = shutil.copytree(saved, tmp_path / "run")
    summary = resume(
        run_dir,
        "train.max_steps=6",
        "train.lr=0.005",
        "train.log_every=1",
        "data.workers=3",
        "run.name=again",
        "wandb.project=other",
    )  # all allowed
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    kinds = [(r["step"], "val/loss" in r) for r in rows]
    assert len(kinds) == len(set(kinds)), kinds
    assert summary["steps"] == 6 and [s for s, _ in kinds] == sorted(s for s, _ in kinds)
    assert rows[-1]["images_seen"] == 6 * 16


def test_a_variant_is_a_new_run_from_the_checkpoint(saved, tmp_path):
    before = files(saved)
    (ckpt,) = checkpoint.checkpoints(saved)
    new = tmp_path / "variant"
    cfg = contract.variant_config(str(ckpt), [f"run.dir={new}", "train.batch_size=8"])
    assert cfg.train.batch_size == 8 and cfg.seed == 0 and cfg.data.synthetic_size == 64
    seen = []
    real = checkpoint.load

    def load(path, map_location="cpu"):
        seen.append(Path(path))
        return real(path, map_location)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoint, "load", load)
        loop.run(load_config(None, ["train.max_steps=2"], base=to_dict(cfg)))
    assert seen == [ckpt]
    saved_cfg = (new / "config.yaml").read_text()
    assert f"start_from: {ckpt}" in saved_cfg and "batch_size: 8" in saved_cfg
    assert files(saved) == before
    with pytest.raises(ConfigError, match="starts a new run, not in"):
        contract.variant_config(str(ckpt), [f"run.dir={saved}"])
    first = torch.load(checkpoint.checkpoints(new)[0], weights_only=True)
    assert first["step"] == 2 and first["config"]["run"]["start_from"] == str(ckpt)
    other_net = ["model.lrn=false", "model.cross=[conv3,fc8]", f"run.dir={tmp_path / 'net'}"]
    words = (
        r"another architecture \(model.cross is \['conv3', 'fc6', 'fc7', 'fc8'\] there, "
        r"\['conv3', 'fc8'\] now; model.lrn is True there, False now\); a new run from them"
    )  # train --from: the weights of another network are refused with both values
    with pytest.raises(ConfigError, match=words):
        loop.run(load_config(None, other_net, base=to_dict(cfg)))

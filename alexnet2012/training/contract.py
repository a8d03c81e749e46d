"""What ``--resume`` may change, and what makes a new run instead.

A resumed run continues the arithmetic its checkpoint was saved in: the same data in the same
order, the same batches, seed, model, update rule and schedule, in the same folder. What a
resume may change is listed in :data:`MAY_CHANGE`, each with its reason; every other key of the
config is refused (exit 2) with its value in the run and on the command line. A variant of a
run is a new run: ``alexnet2012 train --from RUN/checkpoints/ckpt-N.pt run.dir=NEW key=value``
starts from that checkpoint's weights and config in a new folder, whose config.yaml records
both.
"""

from __future__ import annotations

from pathlib import Path

from alexnet2012.config import ConfigError, flatten, parse_override

# key (or "section." for a whole section) -> why a resume may change it
MAY_CHANGE = {
    "train.max_steps": "a longer budget (never below the checkpoint's step)",
    "train.epochs": "a longer budget (never below the checkpoint's step)",
    "train.lr": "a lower rate after a divergence (the resume advice)",
    "train.log_every": "logging",
    "train.eval_every": "validations in an epoch: evaluation only",
    "train.checkpoint_every": "when checkpoints are saved",
    "train.device": "where the same steps run (a resume on another machine)",
    "train.compile": "how fast the same steps run",
    "train.channels_last": "how fast the same steps run",
    "train.grouped": "how fast the same steps run",
    "data.root": "where the same data lives (a run folder moved to another machine)",
    "data.workers": "loader threads: the same batches",
    "data.crop_on": "where the same crops are cut (bit-identical batches, tested)",
    "data.ten_view": "an evaluation extra at the end",
    "parallel.timeout_s": "how long a rank waits for a peer",
    "parallel.slow_timeout_s": "how long a rank waits for a peer",
    "parallel.overlap": "when an exchange runs: the same sums",
    "run.name": "a label",
    "run.start_from": "where the run's first step came from, used only when it starts",
    "wandb.": "Weights & Biases logging",
}


def may_change(key: str) -> bool:
    """Whether ``--resume`` accepts a new value of ``key`` (``train.batch_size``)."""
    return key in MAY_CHANGE or key.split(".")[0] + "." in MAY_CHANGE


def refused(was: dict, now: dict) -> list[tuple[str, object, object]]:
    """``(key, value in the run, value now)`` for each key the resume would change but may
    not (``was``, ``now``: config dicts). ``run.dir`` is checked where the folder is given."""
    before, after = flatten(was), flatten(now)
    keys = [k for k in after if k != "run.dir" and not may_change(k)]
    return [(k, before.get(k), after[k]) for k in keys if before.get(k) != after[k]]


def _value(v) -> str:
    return f"[{','.join(map(str, v))}]" if isinstance(v, tuple | list) else str(v)


def refuse_changes(ckpt: Path, was: dict, now: dict) -> None:
    """ConfigError naming each refused key with both values, and the two ways on: continue
    without the override, or start the variant as a new run from this checkpoint."""
    diff = refused(was, now)
    if not diff:
        return
    said = "; ".join(f"{k} is {_value(a)} in the run, {_value(b)} now" for k, a, b in diff)
    sets = " ".join(f"{k}={_value(b)}" for k, _, b in diff)
    run_dir = ckpt.parent.parent
    raise ConfigError(
        f"--resume {run_dir} cannot change what the run computes ({said}). Drop those "
        "overrides to continue the run, or train the variant as a new run from its checkpoint: "
        f"alexnet2012 train --from {ckpt} run.dir={run_dir}-variant {sets}"
    )


def refuse_short_budget(run_dir, step: int, total: int, ended: bool = False) -> None:
    """ConfigError when the step budget (``train.max_steps``, ``train.epochs``) ends before
    the checkpoint's ``step`` (the run would end behind where it already is), or at it when the
    run has ``ended`` (its summary.json would be written again, without its throughput)."""
    if ended and total == step:
        raise ConfigError(
            f"--resume {run_dir}: the run already ended at step {step} (its summary.json is "
            "written); to train on, give a larger train.max_steps or train.epochs"
        )
    if total >= step:
        return
    raise ConfigError(
        f"--resume {run_dir}: the run is at step {step} but train.max_steps and train.epochs "
        f"end it at step {total}; give a budget of at least {step} steps (train.max_steps=0 "
        "and the run's epochs, or a larger train.max_steps)"
    )


def check_run_dir(resume_dir: str, overrides: list[str]) -> None:
    """ConfigError when a ``run.dir=`` override names another folder than ``--resume``'s: a
    resumed run stays in its folder."""
    for text in overrides:
        value = flatten(parse_override(text)).get("run.dir")
        if value is None or not str(value).strip():
            continue
        if Path(str(value).strip()).resolve() != Path(resume_dir).resolve():
            raise ConfigError(
                f"--resume {resume_dir} continues the run in its own folder; run.dir={value} "
                f"would move it. Drop run.dir= to continue it there, or start a new run from "
                f"its checkpoint: alexnet2012 train --from {Path(resume_dir) / 'checkpoints'}"
                f"/ckpt-N.pt run.dir={value}"
            )


def variant_config(ckpt: str, overrides: list[str]):
    """The config of a new run from checkpoint ``ckpt`` (``train --from``): that run's config,
    then ``overrides``, in a new folder (never the checkpoint's own run folder)."""
    from alexnet2012.config import load_config
    from alexnet2012.training import checkpoint

    path = Path(ckpt)
    base = checkpoint.load(path)["config"]
    base["run"] = {**base.get("run", {}), "dir": "", "start_from": str(path)}
    cfg = load_config(None, overrides, base=base)
    source = path.resolve().parent.parent
    if cfg.run.dir and Path(cfg.run.dir).resolve() == source:
        raise ConfigError(
            f"--from {ckpt} starts a new run, not in {source}, the folder it comes from; give "
            f"run.dir=NEW (or continue that run there with --resume {source})"
        )
    return cfg


def resume_config(run_dir: str, overrides: list[str]):
    """The config of ``--resume run_dir``: its config.yaml, then ``overrides``, in its folder.
    A damaged config.yaml is named, with the way on from the checkpoints' own copy."""
    from alexnet2012.config import load_config
    from alexnet2012.training import checkpoint

    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"--resume {run_dir}: no config.yaml there; is it a run folder?")
    check_run_dir(run_dir, overrides)
    try:
        return load_config(saved, [*overrides, f"run.dir={run_dir}"])
    except ConfigError as e:
        found = checkpoint.checkpoints(run_dir)
        if not str(e).startswith(f"config file {saved}") or not found:
            raise
        raise ConfigError(
            f"{e}. That is the run's own config: restore it from a copy, or start a new run "
            f"from the newest checkpoint, which keeps the config too: alexnet2012 train --from "
            f"{found[0]} run.dir={run_dir}-new"
        ) from None

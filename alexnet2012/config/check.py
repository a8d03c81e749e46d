"""Checks across fields that the types alone cannot express: ranges and combinations."""

from __future__ import annotations

import math

from alexnet2012.config.schema import CROSSABLE, Config, ConfigError, init_for


def validate(cfg: Config) -> None:
    m, t = cfg.model, cfg.train
    for key, value in (("train.batch_size", t.batch_size), ("train.epochs", t.epochs)):
        if value <= 0:
            raise ConfigError(f"{key} must be at least 1, got {value}")
    keys = ("max_steps", "log_every", "eval_every", "checkpoint_every", "plateau_patience")
    for key in (*keys, "max_drops"):
        if getattr(t, key) < 0:
            raise ConfigError(f"train.{key} must be 0 or more, got {getattr(t, key)}")
    if not (0 < t.lr < math.inf):  # also refuses nan
        raise ConfigError(f"train.lr must be a positive number, got {t.lr}")
    for key in ("momentum", "weight_decay"):
        if not (0 <= getattr(t, key) < math.inf):
            raise ConfigError(f"train.{key} must be 0 or a positive number, got {getattr(t, key)}")
    if cfg.data.synthetic_size < 1:
        raise ConfigError(f"data.synthetic_size must be at least 1, got {cfg.data.synthetic_size}")
    bad = [name for name in m.cross if name not in CROSSABLE]
    if bad:
        raise ConfigError(
            f"model.cross: unknown layer {bad[0]!r}; choose from {', '.join(CROSSABLE)}"
        )
    if len(set(m.cross)) != len(m.cross):
        raise ConfigError("model.cross lists a layer twice")
    if "fc8" not in m.cross:
        raise ConfigError("model.cross must include fc8: the classifier reads both towers ([C12])")
    if m.widths and len(m.widths) != 7:
        raise ConfigError(
            f"model.widths needs 7 numbers (conv1..conv5, fc6, fc7), got {len(m.widths)}"
        )
    if any(w <= 0 for w in m.widths):
        raise ConfigError("model.widths must all be positive")
    if m.name == "alexnet2012" and not m.half and any(w % 2 for w in m.widths):
        raise ConfigError("model.widths must be even: each layer is split between two towers")
    init_for(m.name, m.init)  # the 2012 net refuses the baselines' inits
    if m.input_size < 0 or (0 < m.input_size < 32):
        raise ConfigError(
            f"model.input_size must be 0 (preset default) or >= 32, got {m.input_size}"
        )
    numbers = ("train_subset", "test_subset", "val_size", "val_subset", "colour_noise_epochs")
    for key in (*numbers, "workers"):
        if getattr(cfg.data, key) < 0:
            raise ConfigError(f"data.{key} must be 0 or more, got {getattr(cfg.data, key)}")
    if cfg.parallel.timeout_s <= 0 or cfg.parallel.slow_timeout_s <= 0:
        raise ConfigError("parallel.timeout_s and parallel.slow_timeout_s must be positive")
    if cfg.wandb.init_timeout_s <= 0:
        raise ConfigError(f"wandb.init_timeout_s must be positive, got {cfg.wandb.init_timeout_s}")

"""Typed run configuration: defaults here, YAML files override, ``key=value`` overrides YAML.

Unknown keys, wrong types and values outside a field's choices raise :class:`ConfigError`
naming the key and what it accepts.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
CROSSABLE = LAYERS[1:]  # conv1 reads the image, which both towers receive whole ([P] §3.5)


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message names the key."""


def choice(default, *choices):
    return field(default=default, metadata={"choices": choices})


@dataclass
class RunConfig:
    dir: str = ""  # empty: runs/<model>-<time> (torchrun --max-restarts needs one)
    name: str = ""


@dataclass
class ModelConfig:
    name: str = choice("alexnet2012", "alexnet2012", "streamlined", "torchvision")
    preset: str = choice("original", "original", "paper", "caffe")
    # total widths of conv1..conv5, fc6, fc7 (both towers); empty = the model's full size
    widths: list[int] = field(default_factory=list)
    input_size: int = 0  # 0 = the preset's (224, caffe 227)
    # the layers that take input from both towers; default the paper's (ref §1)
    cross: list[str] = field(default_factory=lambda: ["conv3", "fc6", "fc7", "fc8"])
    half: bool = False  # the one-column net of the paper's ablation (ref §1.4)
    lrn: bool = True  # response normalisation (LRN, and the 2012 code's spatial norm)
    overlap_pool: bool = True  # 3/2 pooling ([P] §3.4); false = 2/2
    dropout: str = choice("paper", "paper", "inverted", "none")
    # preset: the preset's stds (ref §1); kaiming: sqrt(2/fan_in); default/xavier: d2l's choices
    init: str = choice("preset", "preset", "kaiming", "default", "xavier")


@dataclass
class DataConfig:
    name: str = choice("fashion_mnist", "fashion_mnist", "imagefolder", "synthetic")
    root: str = ""  # fashion_mnist: folder of IDX files; imagefolder: a prepared store
    train_subset: int = 0  # use the first N training images (0 = all)
    test_subset: int = 0  # evaluate on the first N test images (0 = all)
    # training images set aside (fixed, seeded) as the validation set for val/ metrics and the
    # plateau schedule; 0 = validate on the test split (ILSVRC: its val set, as [P] reports)
    val_size: int = 0
    val_subset: int = 0  # validate during training on the first N validation images (0 = all)
    # input scale (ref §3): c12 = 0-255 minus the training mean image ([C12] convdata.py);
    # standard = mean 0, std 1; unit = [0, 1] ([D2L]); auto = the recipe's, see pixel_scale()
    pixels: str = choice("auto", "auto", "c12", "standard", "unit")
    resize: int = 0  # size before the random crop (0 = input size, no crop)
    flip: bool = True
    colour_noise: str = choice("code", "none", "paper", "code")  # ref §1.3, §3
    pca: str = choice("imagenet", "imagenet", "data")  # colour-noise constants
    colour_noise_epochs: int = 0  # colour noise off from this epoch on (0 = never off; ref §2)
    ten_view: bool = False  # also evaluate the 10 views (ref §3)
    synthetic_size: int = 512  # images in the synthetic set


@dataclass
class TrainConfig:
    batch_size: int = 128
    epochs: int = 10
    max_steps: int = 0  # stop after this many steps (0 = no limit)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    bias_lr_mult: float = 2.0  # [C12] fresh configs; the paper text is 1
    bias_decay: bool = False  # [C12]: biases get no weight decay
    update: str = choice("pytorch", "pytorch", "paper")  # where lr enters the velocity (ref §2)
    # plateau: [P] §5's lr / 10 on a validation plateau; c12: the 2012 code's epoch table
    # (ref §2); constant: [D2L]
    schedule: str = choice("plateau", "plateau", "constant", "c12")
    plateau_patience: int = 0  # epochs without improvement before lr /= 10
    max_drops: int = 3  # [P] §5: three times
    log_every: int = 10
    eval_every: int = 0  # steps between validations inside an epoch (0 = at epoch ends only)
    checkpoint_every: int = 0  # steps; 0 = at each epoch end only
    amp: bool = False  # bf16 autocast
    channels_last: bool = False
    compile: bool = False
    device: str = choice("auto", "auto", "cpu", "cuda")


@dataclass
class ParallelConfig:
    fc8: str = choice("rank0", "rank0", "split")  # rank0: as [C12]; split: partial logits summed
    timeout_s: int = 60  # a dead or hung peer ends the job after this long
    overlap: bool = False  # compute a cross layer's own-tower part while the exchange runs


@dataclass
class WandbConfig:
    mode: str = choice("auto", "auto", "online", "offline", "disabled")
    project: str = "alexnet2012"
    entity: str = ""
    group: str = ""
    job_type: str = ""


@dataclass
class Config:
    seed: int = 0
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _coerce(key: str, value, hint):
    """Check ``value`` against the field type ``hint``; return it (ints widen to float)."""
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            value = [value] if value != "" else []
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: unsupported type {hint}")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e4 (no decimal point) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{key}: expected {name}, got {value!r}")


def _apply(obj, data: dict, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = _hints(type(obj))
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(obj, DataConfig) and key == "normalize":  # before data.pixels existed
            key, value = "pixels", _legacy_pixels(_coerce(full, value, bool), data, obj)
        if key not in fields:
            raise ConfigError(f"unknown key {full!r}; known keys here: {', '.join(fields)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, f"{full}.")
            continue
        value = _coerce(full, value, hints[key])
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{full}: {value!r} is not one of {', '.join(choices)}")
        setattr(obj, key, value)


def _legacy_pixels(normalize: bool, data: dict, obj: DataConfig) -> str:
    """``data.normalize`` of configs written before ``data.pixels``, as the pixels it gave.

    true standardised Fashion-MNIST and subtracted the mean image (0-255) from a prepared store;
    false gave [0, 1] pixels. Run folders of that time resume with the same inputs.
    """
    if not normalize:
        return "unit"
    return "c12" if data.get("name", obj.name) == "imagefolder" else "standard"


def pixel_scale(cfg: Config) -> str:
    """The input scale ``data.pixels`` stands for, ``auto`` resolved by recipe (ref §3, §5).

    - the 2012 net with its preset init: ``c12``, 0-255 pixels minus the training mean image,
      the scale its init stds and biases of 1 were set for ([C12] convdata.py; Caffe's
      bvlc_alexnet subtracts its mean image from 0-255 pixels as well);
    - the 2012 net with He init: ``standard``, the unit-variance inputs He init assumes;
    - the streamlined net: ``unit``, d2l's [0, 1] pixels ([D2L]);
    - torchvision's alexnet: ``standard``, its references' per-channel normalisation.
    """
    if cfg.data.pixels != "auto":
        return cfg.data.pixels
    m = cfg.model
    if m.name == "alexnet2012":
        return "c12" if m.init == "preset" else "standard"
    return "unit" if m.name == "streamlined" else "standard"


def parse_override(text: str) -> dict:
    """``a.b=value`` -> ``{"a": {"b": value}}``, the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value (for example train.epochs=3)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    out: dict = value
    for part in reversed(key.strip().split(".")):
        out = {part: out}
    return out


def load_yaml(path: str | Path, keep_extends: bool = False) -> dict:
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {path} {what}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        why = " ".join(str(e).split())  # one line
        raise ConfigError(f"config file {path} is not valid YAML: {why}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys")
    if not keep_extends:
        data.pop("extends", None)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the YAML file (and the files it ``extends``), then the overrides."""
    cfg = Config()
    if path:
        for layer in _yaml_chain(Path(path)):
            _apply(cfg, layer)
    for text in overrides:
        _apply(cfg, parse_override(text))
    validate(cfg)
    return cfg


def _yaml_chain(path: Path, seen: tuple = ()) -> list[dict]:
    """The file and the files it ``extends`` (relative to it), base first."""
    if path.resolve() in seen:
        raise ConfigError(f"config file {path} extends itself")
    raw = load_yaml(path, keep_extends=True)
    base = raw.pop("extends", None)
    chain = _yaml_chain(path.parent / str(base), (*seen, path.resolve())) if base else []
    return [*chain, raw]


def from_dict(data: dict) -> Config:
    cfg = Config()
    _apply(cfg, data)
    validate(cfg)
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


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
    if m.name == "alexnet2012" and m.init not in ("preset", "kaiming"):
        raise ConfigError(
            f"model.init: {m.init!r} is for the baselines; alexnet2012 takes preset or kaiming"
        )
    if m.input_size < 0 or (0 < m.input_size < 32):
        raise ConfigError(
            f"model.input_size must be 0 (preset default) or >= 32, got {m.input_size}"
        )
    for key in ("train_subset", "test_subset", "val_size", "val_subset", "colour_noise_epochs"):
        if getattr(cfg.data, key) < 0:
            raise ConfigError(f"data.{key} must be 0 or more, got {getattr(cfg.data, key)}")
    if cfg.parallel.timeout_s <= 0:
        raise ConfigError("parallel.timeout_s must be positive")

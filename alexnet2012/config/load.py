"""Reading a configuration: defaults, then YAML files (and the files they ``extends``),
then ``key=value`` overrides; every key and value checked against the schema."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml

from alexnet2012.config.check import validate
from alexnet2012.config.schema import Config, ConfigError, DataConfig


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
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if not isinstance(data, dict):
        key = prefix.rstrip(".") or "config"
        raise ConfigError(
            f"{key}: expected a mapping of its keys ({', '.join(fields)}), got {data!r}; "
            f"write them indented under it, or give them as {prefix}{next(iter(fields))}=..."
        )
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


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error, not "last wins"."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"key {key!r} is given twice, on lines {seen[key]} and {line}; keep one "
                    "(with two, the second would silently replace the first)"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path, keep_extends: bool = False) -> dict:
    """The mapping a YAML config file holds; ConfigError naming the file for any problem."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {path} {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {e.start}: {e.object[e.start]:#04x}); "
            "save it as UTF-8"
        ) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except ConfigError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    except yaml.YAMLError as e:
        why = " ".join(str(e).split())  # one line
        raise ConfigError(f"config file {path} is not valid YAML: {why}") from None
    if data is None:
        raise ConfigError(
            f"config file {path} is empty; give it the keys to change (configs/debug.yaml is a "
            "small example), or leave out --config to train with the defaults"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys")
    if not keep_extends:
        data.pop("extends", None)
    return data


def load_config(
    path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None
) -> Config:
    """Defaults (or ``base``, a saved config), then the YAML file (and the files it
    ``extends``), then the overrides."""
    cfg = Config()
    if base is not None:
        _apply(cfg, base)
    if path:
        for source, layer in _yaml_chain(Path(path)):
            try:
                _apply(cfg, layer)
            except ConfigError as e:
                raise ConfigError(f"config file {source}: {e}") from None
    for text in overrides:
        _apply(cfg, parse_override(text))
    validate(cfg)
    return cfg


def _yaml_chain(path: Path, seen: tuple = ()) -> list[tuple[Path, dict]]:
    """The file and the files it ``extends`` (relative to it), base first, each with its path."""
    if path.resolve() in seen:
        raise ConfigError(f"config file {path} extends itself")
    raw = load_yaml(path, keep_extends=True)
    base = raw.pop("extends", None)
    chain = _yaml_chain(path.parent / str(base), (*seen, path.resolve())) if base else []
    return [*chain, (path, raw)]


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"model": {"lrn": True}}`` -> ``{"model.lrn": True}`` (lists become tuples)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


def from_dict(data: dict) -> Config:
    cfg = Config()
    _apply(cfg, data)
    validate(cfg)
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)

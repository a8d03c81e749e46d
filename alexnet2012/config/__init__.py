"""Typed run configuration: defaults here, YAML files override, ``key=value`` overrides YAML.

Unknown keys, wrong types and values outside a field's choices raise :class:`ConfigError`
naming the key and what it accepts.
"""

from alexnet2012.config.check import validate
from alexnet2012.config.load import (
    flatten,
    from_dict,
    load_config,
    load_yaml,
    parse_override,
    to_dict,
)
from alexnet2012.config.schema import (
    CROSSABLE,
    DATA_NAMES,
    LAYERS,
    PAPER_CROSS,
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    ParallelConfig,
    RunConfig,
    TrainConfig,
    WandbConfig,
    init_for,
    pixel_scale,
)

__all__ = [
    "CROSSABLE", "DATA_NAMES", "LAYERS", "PAPER_CROSS", "Config", "ConfigError", "DataConfig",
    "ModelConfig", "ParallelConfig", "RunConfig", "TrainConfig", "WandbConfig", "flatten",
    "from_dict", "init_for", "load_config", "load_yaml", "parse_override", "pixel_scale",
    "to_dict", "validate",
]  # fmt: skip

"""The derived config's rules, each written once: which init each net gets (config.init_for),
and the places that must follow them (validation, the model, bench's two-tower executions)."""

import dataclasses

import pytest

from alexnet2012.bench.measure import config_for
from alexnet2012.config import (
    DATA_NAMES,
    Config,
    ConfigError,
    DataConfig,
    init_for,
    load_config,
    pixel_scale,
)
from alexnet2012.nets.model import AlexNet2012

RULE = {  # (net, model.init) -> the init it gets; None: refused
    ("alexnet2012", "preset"): "preset",
    ("alexnet2012", "kaiming"): "kaiming",
    ("alexnet2012", "default"): None,
    ("alexnet2012", "xavier"): None,
    ("streamlined", "preset"): "default",  # the baselines' own default (ref §5)
    ("streamlined", "xavier"): "xavier",
    ("streamlined", "kaiming"): "kaiming",
    ("torchvision", "preset"): "default",
    ("torchvision", "default"): "default",
}


@pytest.mark.parametrize("net, init", list(RULE))
def test_init_rule_and_its_users(net, init):
    want = RULE[net, init]
    override = [f"model.name={net}", f"model.init={init}"]
    if want is None:
        for refuse in (
            lambda: init_for(net, init),
            lambda: load_config(None, override),  # config/check.py
            lambda: AlexNet2012(num_classes=10, widths=(8,) * 7, input_size=64, init=init),
        ):
            with pytest.raises(ConfigError, match=f"model.init: '{init}' is for the baselines"):
                refuse()
        cfg = Config()
        cfg.model.name, cfg.model.init = "streamlined", init  # bench runs the 2012 net as well
        assert config_for(cfg, "emulated").model.init == "preset"
        return
    assert init_for(net, init) == want
    cfg = load_config(None, override)
    assert config_for(cfg, "emulated" if net == "alexnet2012" else net).model.init == init
    if net == "alexnet2012":
        assert AlexNet2012(num_classes=10, widths=(8,) * 7, input_size=64, init=init).init == want
        assert pixel_scale(cfg) == ("c12" if want == "preset" else "standard")


def test_data_names_are_one_tuple():
    """data.name accepts config.DATA_NAMES, and data/sources.py builds exactly those."""
    from alexnet2012.data.sources import SOURCES

    choices = {f.name: f for f in dataclasses.fields(DataConfig)}["name"].metadata["choices"]
    assert choices == DATA_NAMES == tuple(SOURCES)


@pytest.mark.parametrize(
    "override, size",
    [([], 224), (["model.preset=caffe"], 227), (["model.input_size=96"], 96),
     (["model.name=streamlined", "model.preset=caffe"], 224)],
)  # fmt: skip
def test_input_size_one_rule(override, size):
    """nets/build.input_size decides the input size; a report of the run's config says the same."""
    from alexnet2012.config import flatten, to_dict
    from alexnet2012.nets.build import input_size
    from alexnet2012.report.paper import scale

    cfg = load_config(None, override)
    assert input_size(cfg) == size
    assert f", {size}x{size} input," in scale(flatten(to_dict(cfg)))


def test_a_report_of_an_unknown_preset_says_the_default_size():
    """A run's config from W&B or an older version may name a preset this version lacks: the
    report says the default preset's size, as it did before the rule was shared."""
    from alexnet2012.report.paper import scale

    assert ", 224x224 input," in scale({"model.preset": "?"})
    assert ", 227x227 input," in scale({"model.preset": "caffe"})

"""The data's shape is decided once (data/shape.py): each data set, built for real, has the
classes and channels the resolver gives without loading it, and ``summary`` builds that net."""

from pathlib import Path

from fakedata import make_fashion
from imagetree import make_tree

from alexnet2012 import cli
from alexnet2012.config import Config
from alexnet2012.data import build_data
from alexnet2012.data.prepare import prepare_main
from alexnet2012.data.shape import data_shape

DEBUG = str(Path(__file__).resolve().parents[2] / "configs" / "debug.yaml")


def _cfg(name, root="", **data) -> Config:
    cfg = Config()
    cfg.data.name, cfg.data.root = name, str(root)
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def test_each_data_set_has_the_shape_the_resolver_gives(tmp_path):
    prepare_main(str(make_tree(tmp_path / "src")), str(tmp_path / "store"), size=32, workers=0)
    cases = {
        "fashion_mnist": _cfg("fashion_mnist", make_fashion(tmp_path / "fm", n_train=60)),
        "synthetic": _cfg("synthetic", synthetic_size=64),
        "imagefolder": _cfg("imagefolder", tmp_path / "store"),
    }
    for name, cfg in cases.items():
        classes, channels, images = data_shape(cfg)
        data = build_data(cfg, 24, "cpu")
        assert (classes, channels) == (data.num_classes, data.in_channels), name
        if name != "fashion_mnist":  # the resolver counts the real set's 60,000
            assert images == data.sizes["train"], name


def test_summary_builds_the_net_of_the_configured_data(capsys):
    """``summary`` of the synthetic set: 10 classes of 3-channel images (once a 1000-class net)."""
    assert cli.main(["summary", "--config", DEBUG, "data.name=synthetic"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith("input 3x95x95, 10 classes"), first
    assert cli.main(["summary", "--config", DEBUG]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("input 1x95x95, 10 classes")

import pytest

from alexnet2012.config import ConfigError, load_config, parse_override


def test_defaults_and_yaml_and_overrides(tmp_path):
    cfg = load_config("configs/debug.yaml", ["train.epochs=3", "model.preset=paper", "seed=7"])
    assert cfg.train.epochs == 3 and cfg.model.preset == "paper" and cfg.seed == 7
    assert cfg.model.widths == [16, 32, 48, 48, 32, 64, 64]  # from the YAML
    assert cfg.train.momentum == 0.9  # a default
    cfg = load_config(None, ["model.cross=[conv3,fc6,fc8]", "train.lr=1"])
    assert cfg.model.cross == ["conv3", "fc6", "fc8"] and cfg.train.lr == 1.0


def test_extends(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  epochs: 4\n  lr: 0.5\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\ntrain:\n  lr: 0.25\n")
    cfg = load_config(child)
    assert cfg.train.epochs == 4 and cfg.train.lr == 0.25


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.epoch=3", ["unknown key 'train.epoch'", "epochs"]),
        ("model.preset=resnet", ["model.preset", "original", "paper"]),
        ("train.batch_size=0", ["train.batch_size", "at least 1"]),
        ("train.batch_size=abc", ["train.batch_size", "expected int"]),
        ("train.amp=3", ["train.amp", "expected bool"]),
        ("model.cross=[conv9,fc8]", ["conv9", "conv2"]),
        ("model.cross=[conv3]", ["fc8"]),
        ("model.widths=[3,4]", ["model.widths", "7"]),
        ("parallel.fc8=both", ["parallel.fc8", "rank0", "split"]),
        ("data.workers=-1", ["data.workers", "0 or more"]),
        ("data.crop_on=gpu", ["data.crop_on", "host", "device"]),
        ("nonsense", ["key=value"]),
    ],
)
def test_errors_name_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    for w in words:
        assert w in str(e.value)


def test_unknown_key_in_yaml(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("model:\n  widht: [1]\n")
    with pytest.raises(ConfigError, match="model.widht"):
        load_config(f)


def test_parse_override_nesting():
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}

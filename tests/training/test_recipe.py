"""The full-size recipes: input scale per recipe, the held-out validation split, the 2012 code's
update rule and schedule, the pooling dimensions and the init health report."""

import json

import pytest
import torch
import torch.nn.functional as F
from fakedata import make_fashion

from alexnet2012.cli import main as cli_main
from alexnet2012.config import load_config, pixel_scale
from alexnet2012.data import build_data, fashion_mnist
from alexnet2012.nets.model import AlexNet2012
from alexnet2012.training import evaluate as evaluation
from alexnet2012.training import loop
from alexnet2012.training.inithealth import init_report
from alexnet2012.training.optim import PaperSGD, build_optimizer
from alexnet2012.training.schedule import C12Schedule, build_schedule

SHIPPED = ("fashion_mnist_2012", "fashion_mnist_d2l", "imagenet_2012", "imagenet_paper")


def test_input_scale_per_recipe():
    want = {"fashion_mnist_2012": "c12", "fashion_mnist_d2l": "unit", "imagenet_2012": "c12",
            "imagenet_paper": "c12"}  # fmt: skip
    for name in SHIPPED:
        assert pixel_scale(load_config(f"configs/{name}.yaml")) == want[name], name
    auto = {  # data.pixels=auto, by recipe (ref §3, §5)
        ("alexnet2012", "preset"): "c12", ("alexnet2012", "kaiming"): "standard",
        ("streamlined", "default"): "unit", ("torchvision", "default"): "standard",
    }  # fmt: skip
    for (name, init), pixels in auto.items():
        assert (
            pixel_scale(load_config(None, [f"model.name={name}", f"model.init={init}"])) == pixels
        )
    # configs written before data.pixels resume with the pixels they had
    legacy = {("fashion_mnist", True): "standard", ("fashion_mnist", False): "unit",
              ("imagefolder", True): "c12", ("imagefolder", False): "unit"}  # fmt: skip
    for (data, normalize), pixels in legacy.items():
        cfg = load_config(None, [f"data.name={data}", f"data.normalize={normalize}"])
        assert cfg.data.pixels == pixels


def test_c12_pixels_are_0_255_minus_the_training_mean_image(tmp_path):
    root = make_fashion(tmp_path / "fm", n_train=60, n_test=20)
    raw = fashion_mnist.load(root, system_dir=tmp_path, cache=tmp_path)
    over = [f"data.root={root}", "data.flip=false", "data.train_subset=0", "data.test_subset=0"]
    cfg = load_config("configs/debug.yaml", [*over, "data.pixels=c12", "data.resize=0"])
    data = build_data(cfg, 64, "cpu")
    x, _ = next(data.eval_batches(4))
    up = F.interpolate(raw["test_images"][:4].float(), size=(64, 64), mode="bilinear")
    mean = F.interpolate(raw["train_images"].double().mean(0, keepdim=True).float(), (64, 64),
                         mode="bilinear")  # fmt: skip
    torch.testing.assert_close(x, up - mean, atol=1e-3, rtol=0)
    assert 40 < float(x.std()) < 120  # the 0-255 scale, not ~1
    std = build_data(load_config("configs/debug.yaml", [*over, "data.pixels=standard"]), 64, "cpu")
    assert 0.5 < float(next(std.eval_batches(4))[0].std()) < 2


def test_validation_split_is_held_out_of_training_and_apart_from_test(tmp_path):
    root = make_fashion(tmp_path / "fm", n_train=100, n_test=30)
    over = [f"data.root={root}", "data.flip=false", "data.train_subset=0", "data.test_subset=0"]
    over += ["data.pixels=unit", "data.resize=0"]  # 28x28, [0, 1]: x * 255 is the stored bytes

    def make(*extra):
        return build_data(load_config("configs/debug.yaml", [*over, *extra]), 28, "cpu")

    data = make("data.val_size=20", "seed=3")
    assert data.sizes == {"train": 80, "val": 20, "test": 30} and data.held_out
    # make_fashion's images are distinct random arrays: compare them as byte strings
    train = {bytes(x.numpy()) for x in data.x["train"]}
    val = {bytes(x.numpy()) for x in data.x["val"]}
    test = {bytes(x.numpy()) for x in data.x["test"]}
    assert len(train) == 80 and len(val) == 20 and not train & val and not val & test
    seen = set()
    for epoch in range(2):  # every training batch comes from the training part only
        for x, _ in data.train_batches(epoch, 16, 3):
            seen.update(bytes(v.numpy()) for v in (x * 255).round().to(torch.uint8))
    assert seen <= train
    other = make("data.val_size=20", "seed=9", "data.train_subset=40")
    assert {bytes(x.numpy()) for x in other.x["val"]} == val  # fixed, whatever the run seed
    assert data.describe("val") == "20 held-out training images"
    plain = make()
    assert not plain.held_out and plain.describe("val") == "30 test images"
    with pytest.raises(Exception, match="data.val_size=100 leaves no training images"):
        make("data.val_size=100")


def test_summary_names_what_each_number_was_measured_on(tmp_path, monkeypatch):
    root = make_fashion(tmp_path / "fm", n_train=96, n_test=32)
    cfg = load_config("configs/debug.yaml", [
        f"data.root={root}", "data.train_subset=0", "data.test_subset=0", "data.val_size=32",
        "train.batch_size=16", "train.eval_every=2", "train.log_every=1", "data.resize=0",
        "model.input_size=64", f"run.dir={tmp_path / 'run'}",
    ])  # fmt: skip
    splits, inner = [], evaluation._evaluate

    def recording(ex, data, cfg, ten_view, split):
        splits.append(split)
        return inner(ex, data, cfg, ten_view, split)

    monkeypatch.setattr(evaluation, "_evaluate", recording)
    summary = loop.run(cfg)
    assert summary["val_set"] == "32 held-out training images"
    assert summary["test_set"] == "32 test images"
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    val_steps = [r["step"] for r in rows if "val/top1_err" in r]
    assert val_steps == [2, 4], val_steps  # eval_every inside the epoch, then the epoch's end
    assert all("images_seen" in r for r in rows)
    assert all(r["images_seen"] == 16 * r["step"] for r in rows)
    # validated at steps 2 and 4, then the test split once, at the end
    assert splits == ["val", "val", "test"], splits
    assert {"test/top1_err", "final_val_top1_err"} <= set(summary)


def test_c12_schedule_epochs_and_groups():
    f = C12Schedule.factors
    assert f(0) == f(23) == {"weights": 1, "biases": 1, "conv1 weights": 1, "conv1 biases": 1}
    assert f(24)["weights"] == f(24)["conv1 weights"] == 0.1  # 1-based epoch 25
    assert f(50)["weights"] == f(50)["conv1 weights"] == 0.01  # 51
    assert f(65)["conv1 weights"] == 0.01 and f(66)["conv1 weights"] == 0.001  # 67
    assert f(70)["conv1 biases"] == 1 and f(71)["conv1 weights"] == f(71)["conv1 biases"] == 0
    assert f(77)["weights"] == 0.01 and f(78)["weights"] == 0.001  # 79
    assert all(f(e)["biases"] == 1 for e in range(95))  # biases keep 0.02 throughout
    cfg = load_config("configs/imagenet_2012.yaml")
    assert (cfg.train.update, cfg.train.schedule, cfg.data.pca) == ("paper", "c12", "data")
    assert cfg.data.colour_noise_epochs == 66 and cfg.train.epochs == 90
    for name in ("fashion_mnist_2012", "imagenet_paper"):  # the 2012 rule wherever 2012 is claimed
        assert load_config(f"configs/{name}.yaml").train.update == "paper", name
    model = AlexNet2012(10, 3, widths=[8, 16, 16, 16, 8, 16, 16], input_size=67)
    opt = build_optimizer(model.named_parameters(), cfg.train)
    assert isinstance(opt, PaperSGD)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["conv1 weights"]["param_names"] == ["conv1.weight"]
    assert groups["conv1 biases"]["param_names"] == ["conv1.bias"]
    assert "conv1.weight" not in groups["weights"]["param_names"]
    sched = build_schedule(opt, cfg.train)
    lrs = {}
    for epoch in (0, 24, 66, 71, 78):
        sched.begin_epoch(epoch)
        lrs[epoch] = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs[0] == pytest.approx({"weights": 0.01, "biases": 0.02, "conv1 weights": 0.01,
                                    "conv1 biases": 0.02})  # fmt: skip
    assert lrs[24]["weights"] == pytest.approx(0.001) and lrs[24]["biases"] == 0.02
    assert lrs[66]["conv1 weights"] == pytest.approx(1e-5) and lrs[66]["weights"] == 1e-4
    assert lrs[71]["conv1 weights"] == lrs[71]["conv1 biases"] == 0
    assert lrs[78]["weights"] == pytest.approx(1e-5)
    assert sched.step(0.9) is False  # validation errors do not move it


def test_resume_across_a_c12_change_point_continues_exactly(tmp_path):
    """Epoch 25 (1-based) divides the weights' lr by 10: stop in epoch 24, resume, compare."""
    over = ["data.name=synthetic", "data.synthetic_size=16", "data.test_subset=8",
            "train.batch_size=8", "train.epochs=26", "train.schedule=c12", "train.update=paper",
            "train.log_every=1", "wandb.mode=disabled", "train.momentum=0.9"]  # fmt: skip
    one = tmp_path / "one"
    loop.run(load_config("configs/debug.yaml", [*over, f"run.dir={one}"]))
    two = tmp_path / "two"
    loop.run(load_config("configs/debug.yaml", [*over, f"run.dir={two}", "train.max_steps=47"]))
    again = load_config(two / "config.yaml", ["train.max_steps=0", f"run.dir={two}"])
    loop.run(again, resume=True)

    def lr_and_loss(run):
        rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
        return {r["step"]: (r["train/lr"], r["train/loss"]) for r in rows if "train/loss" in r}

    a, b = lr_and_loss(one), lr_and_loss(two)
    assert sorted(a) == sorted(b) == list(range(1, 53))
    assert a[48][0] == pytest.approx(0.01) and a[49][0] == pytest.approx(0.001)  # epoch 25
    for step in a:
        assert a[step][0] == b[step][0], step
        assert a[step][1] == pytest.approx(b[step][1], rel=1e-5, abs=1e-6), step


def test_two_by_two_pooling_keeps_the_papers_dimensions():
    for overlap in (True, False):
        net = AlexNet2012(10, 3, overlap_pool=overlap)
        assert net.sizes == {"conv1": 55, "conv2": 27, "conv3": 13, "conv4": 13, "conv5": 13,
                             "fc": 6}, overlap  # fmt: skip
        assert net.fc6.weight.shape == (4096, 9216)
        with torch.no_grad():
            assert net(torch.zeros(1, 3, 224, 224)).shape == (1, 10)


def test_init_report_shows_the_input_scale_trap(tmp_path, capsys):
    root = make_fashion(tmp_path / "fm", n_train=64, n_test=16)
    over = [f"data.root={root}", "model.init=preset", "data.train_subset=0", "data.resize=0",
            "model.input_size=67", "model.widths=[16, 32, 48, 48, 32, 64, 64]"]  # fmt: skip
    c12 = init_report(load_config("configs/debug.yaml", [*over, "data.pixels=c12"]), 16)
    std = init_report(load_config("configs/debug.yaml", [*over, "data.pixels=standard"]), 16)
    assert [r["layer"] for r in c12["fp32"]["rows"]] == [f"conv{i}" for i in range(1, 6)] + [
        "fc6", "fc7", "fc8"]  # fmt: skip
    # the 2012 init on 0-255 pixels: logits that depend on the image far more than on ~1/90 of it
    assert c12["fp32"]["spread"] > 10 * std["fp32"]["spread"]
    # (bf16 against that spread is a full-size question: README "Full size on Fashion-MNIST")
    for rep in (c12, std):
        for row in rep["fp32"]["rows"]:
            assert row["grad_norm"] > 0 and 0 < row["update_ratio"] < 1, row
    code = cli_main(["summary", "--init", "--batch", "8", "--config", "configs/debug.yaml", *over])
    out = capsys.readouterr().out
    assert code == 0 and "bf16 rounding of the logits" in out and "conv1" in out, out


def test_evaluation_shows_progress(monkeypatch):
    """A whole-set evaluation advances a progress bar per batch, as training does."""
    from alexnet2012.nets.build import build_model
    from alexnet2012.parallel.execution import Execution
    from alexnet2012.training import evaluate as evaluation

    bars = []

    class Bar:
        def __init__(self, main, total, done, unit):
            self.total, self.n, self.closed = total, 0, False
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def close(self):
            self.closed = True

    monkeypatch.setattr(evaluation, "progress", lambda *a, **k: Bar(*a, **k))
    cfg = load_config(
        "configs/debug.yaml",
        [
            "data.name=synthetic",
            "data.synthetic_size=40",
            "data.test_subset=0",
            "train.batch_size=4",
        ],
    )
    data = build_data(cfg, 95, "cpu")
    ex = Execution(build_model(cfg, 10, 3))
    for views in (False, True):
        evaluation.evaluate(ex, data, cfg, views, "test")
    assert [(b.total, b.n, b.closed) for b in bars] == [(3, 3, True), (3, 3, True)]  # 10 images

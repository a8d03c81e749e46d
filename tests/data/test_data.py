"""Data pipeline: IDX reading, Fashion-MNIST, transforms and batching (the store: test_prepare)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fakedata import make_fashion
from imagetree import make_tree

from alexnet2012 import cli
from alexnet2012.config import Config
from alexnet2012.data import DataError, Store, build_data, fashion_mnist, transforms
from alexnet2012.data.idx import read_images, read_labels, write_idx
from alexnet2012.data.loader import STREAM_ORDER, generator
from alexnet2012.data.prepare import prepare_main
from alexnet2012.data.shape import data_shape

SYSTEM = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------- IDX and Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path, gz):
    images = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    write_idx(path, images)
    np.testing.assert_array_equal(read_images(path), images)
    write_idx(path, np.arange(7) % 10)
    np.testing.assert_array_equal(read_labels(path), np.arange(7) % 10)


def test_idx_problems_name_the_file(tmp_path):
    images = np.zeros((5, 28, 28), np.uint8)
    good = tmp_path / "good"
    write_idx(good, images)
    data = good.read_bytes()
    cases = {
        "truncated": (data[:-100], "truncated"),
        "trailing": (data + b"\0", "trailing"),
        "wrong_count": (data[:4] + (6).to_bytes(4, "big") + data[8:], "truncated"),
        "short": (data[:2], "too short"),
    }
    for name, (raw, words) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(DataError, match=words) as e:
            read_images(tmp_path / name)
        assert name in str(e.value)
    with pytest.raises(DataError, match="magic number 2051 is not 2049") as e:
        read_labels(good)
    assert str(good) in str(e.value)
    gz = tmp_path / "broken.gz"
    write_idx(gz, images)
    gz.write_bytes(gz.read_bytes()[:30])
    with pytest.raises(DataError, match="gzip") as e:
        read_images(gz)
    assert "broken.gz" in str(e.value)


def test_fashion_load_and_checks(tmp_path):
    root = make_fashion(tmp_path / "fm", gz=False)
    data = fashion_mnist.load(root, system_dir=tmp_path / "none", cache=tmp_path / "none")
    assert data["train_images"].shape == (120, 1, 28, 28)
    assert data["train_images"].dtype == torch.uint8
    assert data["test_labels"].dtype == torch.int64 and len(data["test_labels"]) == 40
    write_idx(root / "t10k-labels-idx1-ubyte", np.arange(39) % 10)
    with pytest.raises(DataError, match="39 labels") as e:
        fashion_mnist.load(root, system_dir=tmp_path / "none", cache=tmp_path / "none")
    assert "t10k-images" in str(e.value)


def test_fashion_missing_names_all_three_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "_server_reachable", lambda timeout=3.0: False)
    with pytest.raises(DataError) as e:
        fashion_mnist.locate(tmp_path / "a", system_dir=tmp_path / "b", cache=tmp_path / "c")
    msg = str(e.value)
    assert "data.root" in msg and "apt-get install -y dataset-fashion-mnist" in msg
    assert "download" in msg and str(tmp_path / "c") in msg


@pytest.mark.skipif(not (SYSTEM / "train-images-idx3-ubyte.gz").is_file(), reason="no Debian set")
def test_real_fashion_mnist():
    data = fashion_mnist.load("", system_dir=SYSTEM, cache=Path("/nonexistent"))
    assert data["train_images"].shape == (60000, 1, 28, 28)
    assert data["test_images"].shape == (10000, 1, 28, 28)
    for split, per_class in (("train", 6000), ("test", 1000)):
        labels = data[f"{split}_labels"]
        assert labels.min() == 0 and labels.max() == 9
        assert torch.bincount(labels).tolist() == [per_class] * 10


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "src")


# ---------------------------------------------------------------- transforms


def test_ten_views_match_explicit_slices():
    x = torch.arange(2 * 3 * 9 * 11, dtype=torch.float32).reshape(2, 3, 9, 11)
    views = transforms.ten_views(x, 6)
    assert views.shape == (10, 2, 3, 6, 6)
    expect = [
        x[..., 0:6, 0:6],
        x[..., 0:6, 5:11],
        x[..., 1:7, 2:8],
        x[..., 3:9, 0:6],
        x[..., 3:9, 5:11],
    ]
    expect += [torch.flip(v, dims=[3]) for v in expect]
    for i, v in enumerate(expect):
        torch.testing.assert_close(views[i], v, rtol=0, atol=0)
    torch.testing.assert_close(views[2], transforms.center_crop(x, 6), rtol=0, atol=0)


def test_random_crop_flip():
    x = torch.randint(0, 256, (70, 3, 12, 12), dtype=torch.uint8)
    a = transforms.random_crop_flip(x, 8, torch.Generator().manual_seed(3))
    b = transforms.random_crop_flip(x, 8, torch.Generator().manual_seed(3))
    assert a.shape == (70, 3, 8, 8) and torch.equal(a, b)
    g = torch.Generator().manual_seed(3)
    top, left = torch.randint(0, 5, (70,), generator=g), torch.randint(0, 5, (70,), generator=g)
    flip = torch.randint(0, 2, (70,), generator=g)
    for i in range(70):
        patch = x[i, :, top[i] : top[i] + 8, left[i] : left[i] + 8]
        assert torch.equal(a[i], patch.flip(-1) if flip[i] else patch)
    assert 10 < int(flip.sum()) < 60
    same = x[:1].expand(70, -1, -1, -1)  # [C12] chunks: 32 images share one crop and flip
    c = transforms.random_crop_flip(same, 8, torch.Generator().manual_seed(4), per_chunk=32)
    assert all(torch.equal(c[i], c[i // 32 * 32]) for i in range(70))


@pytest.mark.parametrize("form", ["paper", "code"])
def test_pca_noise_forms(form):
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64) * 50
    s, v = transforms.ILSVRC2012_PCA_STDEVS, transforms.ILSVRC2012_PCA_EIGVECS
    out = transforms.pca_noise(x, s, v, torch.Generator().manual_seed(7), form=form)
    alpha = torch.randn(5, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    alpha = alpha.numpy() * 0.1  # [P]: alpha ~ N(0, 0.1)
    vn, sn, xn = np.array(v), np.array(s), x.numpy()
    for i in range(5):
        if form == "paper":  # sum_i p_i alpha_i lambda_i, lambda of [0, 1] pixels, in 0-255
            rgb = 255 * sum(vn[:, j] * alpha[i, j] * (sn[j] / 255) ** 2 for j in range(3))
            expect = xn[i] + rgb[:, None, None]
        else:  # [C12]: (x + V (alpha * sqrt(lambda))) / 1.1
            expect = (xn[i] + (vn @ (alpha[i] * sn))[:, None, None]) / 1.1
        np.testing.assert_allclose(out[i].numpy(), expect, rtol=1e-12)


def test_spec_constants():
    v = np.array(transforms.ILSVRC2012_PCA_EIGVECS)
    np.testing.assert_allclose(v.T @ v, np.eye(3), atol=1e-5)  # columns are unit eigenvectors
    s = np.array(transforms.ILSVRC2012_PCA_STDEVS)
    assert list(s) == sorted(s)  # ascending, as [C14] lists them
    # an independent estimate (fb.resnet.torch, ref §3: eigenvalues of [0, 1] pixels) agrees
    fb = np.sqrt([0.0045, 0.0188, 0.2175]) * 255  # std-devs, ascending, 0-255 units
    np.testing.assert_allclose(s, fb, rtol=0.2)
    # natural images: the largest component is brightness (all channels together) and every
    # pair of channels is positively correlated
    main = v[:, 2] * np.sign(v[0, 2])
    np.testing.assert_allclose(main, np.full(3, 3**-0.5), atol=0.05)
    cov = v @ np.diag(s**2) @ v.T
    assert (cov > 0).all()


# ---------------------------------------------------------------- build_data and batches


def cfg_for(name, root="", **data) -> Config:
    cfg = Config()
    cfg.data.name, cfg.data.root = name, str(root)
    for k, val in data.items():
        setattr(cfg.data, k, val)
    return cfg


def batches(data, epoch, seed, start=0, bs=16):
    return [(x.clone(), y.clone()) for x, y in data.train_batches(epoch, bs, seed, start=start)]


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("name", ["synthetic", "fashion_mnist", "imagefolder"])
def test_batches_are_counter_based(name, tree, tmp_path):
    if name == "fashion_mnist":
        cfg = cfg_for(name, make_fashion(tmp_path / "fm"), resize=36)
    elif name == "imagefolder":
        prepare_main(str(tree), str(tmp_path / "dst"), size=32, workers=0)
        cfg = cfg_for(name, tmp_path / "dst", train_subset=12)
    else:
        cfg = cfg_for(name, synthetic_size=100)
    data = build_data(cfg, 28, "cpu")
    other_process = build_data(cfg, 28, "cpu")
    assert data.steps_per_epoch(16) == data.train_size // 16
    full = batches(data, 1, 5, bs=4)
    assert full[0][0].shape == (4, data.in_channels, 28, 28) and full[0][0].dtype == torch.float32
    assert same(full, batches(other_process, 1, 5, bs=4))
    assert not same(full, batches(data, 1, 6, bs=4)) and not same(full, batches(data, 2, 5, bs=4))
    assert same(full[2:], batches(data, 1, 5, start=2, bs=4))
    x, y = next(data.eval_batches(5, ten_view=True))
    assert x.shape == (10, 5, data.in_channels, 28, 28) and y.shape == (5,)
    assert sum(len(y) for _, y in data.eval_batches(7)) == data.test_size


def test_fashion_d2l_pipeline(tmp_path):
    cfg = cfg_for("fashion_mnist", make_fashion(tmp_path / "fm"), pixels="unit", flip=False)
    data = build_data(cfg, 64, "cpu")
    raw = fashion_mnist.load(tmp_path / "fm", system_dir=tmp_path, cache=tmp_path)
    x, _ = next(data.eval_batches(8))
    expect = F.interpolate(raw["test_images"][:8].float() / 255, size=(64, 64), mode="bilinear")
    torch.testing.assert_close(x, expect)
    xt, yt = next(data.train_batches(0, 8, 0))  # no augmentation: exactly resized images
    order = torch.randperm(120, generator=generator(STREAM_ORDER, 0, 0))[:8]
    torch.testing.assert_close(
        xt, F.interpolate(raw["train_images"][order].float() / 255, size=(64, 64), mode="bilinear")
    )
    assert torch.equal(yt, raw["train_labels"][order])
    cfg.data.pixels, cfg.data.train_subset = "standard", 50
    data = build_data(cfg, 64, "cpu")
    assert data.train_size == 50 and abs(float(data.mean) - 0.5) < 0.05
    assert len(torch.bincount(data.y["train"])) == 10  # a seeded subset spans the classes


def test_imagefolder_pipeline(tree, tmp_path):
    with pytest.raises(DataError, match="alexnet2012 prepare SRC DST"):
        build_data(cfg_for("imagefolder", tmp_path / "nothing"), 28, "cpu")
    prepare_main(str(tree), str(tmp_path / "dst"), size=32, workers=0)
    store = Store(tmp_path / "dst")
    mean_patch = torch.from_numpy(store.mean).permute(2, 0, 1)[:, 2:30, 2:30]
    cfg = cfg_for("imagefolder", tmp_path / "dst", colour_noise="none", pca="data")
    x, y = next(build_data(cfg, 28, "cpu").eval_batches(6))
    images = torch.from_numpy(store.images("val")[:6].copy()).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(x, images[:, :, 2:30, 2:30] - mean_patch)  # [C12] centre patch
    assert y.tolist() == store.labels("val")[:6].tolist()
    shifts = {}
    for normalize in (True, False):  # noise goes on mean-subtracted pixels either way ([C12])
        cfg.data.pixels = "c12" if normalize else "unit"
        cfg.data.colour_noise = "none"
        plain, _ = next(build_data(cfg, 28, "cpu").train_batches(0, 8, 0))
        for noise in ("paper", "code"):
            cfg.data.colour_noise = noise
            xn, _ = next(build_data(cfg, 28, "cpu").train_batches(0, 8, 0))  # same crops
            a, b = (xn, plain) if normalize else (xn * 255 - mean_patch, plain * 255 - mean_patch)
            shift = a * (1.1 if noise == "code" else 1.0) - b  # code: (x + rgb) / 1.1
            flat = shift.flatten(2)  # (8, 3, 28*28): one colour shift per image and channel
            assert (flat.std(2) < 1e-3).all(), (normalize, noise, flat.std(2).max())
            assert (flat.mean(2).abs().sum(1) > 0.1).all(), (normalize, noise)
            shifts[normalize, noise] = flat.mean(2)
    for noise in ("paper", "code"):  # the same draws whether or not pixels are standardised
        torch.testing.assert_close(shifts[True, noise], shifts[False, noise], rtol=0, atol=1e-3)
    assert not torch.allclose(shifts[True, "paper"], shifts[True, "code"])


def test_synthetic_is_learnable():
    data = build_data(cfg_for("synthetic", synthetic_size=200, flip=False), 32, "cpu")
    x, y = next(data.train_batches(0, 200, 0))
    feats = x.mean((2, 3))  # channel means carry the class colour
    centres = torch.stack([feats[y == k].mean(0) for k in range(10)])
    xt, yt = next(data.eval_batches(100))
    pred = torch.cdist(xt.mean((2, 3)), centres).argmin(1)
    assert (pred == yt).float().mean() > 0.9


# ---------------------------------------------------------------- the data's shape (data/shape.py)


def test_each_data_set_has_the_shape_the_resolver_gives(tmp_path):
    prepare_main(str(make_tree(tmp_path / "src")), str(tmp_path / "store"), size=32, workers=0)
    cases = {
        "fashion_mnist": cfg_for("fashion_mnist", make_fashion(tmp_path / "fm", n_train=60)),
        "synthetic": cfg_for("synthetic", synthetic_size=64, val_size=16),  # 48 to train
        "imagefolder": cfg_for("imagefolder", tmp_path / "store"),
    }
    for name, cfg in cases.items():
        classes, channels, images = data_shape(cfg)
        data = build_data(cfg, 24, "cpu")
        assert (classes, channels) == (data.num_classes, data.in_channels), name
        if name != "fashion_mnist":  # the resolver counts the real set's 60,000
            assert images == data.sizes["train"], name


def test_summary_builds_the_net_of_the_configured_data(capsys):
    """``summary`` of the synthetic set: 10 classes of 3-channel images (once a 1000-class net)."""
    debug = str(Path(__file__).resolve().parents[2] / "configs" / "debug.yaml")
    assert cli.main(["summary", "--config", debug, "data.name=synthetic"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith("input 3x95x95, 10 classes"), first
    assert cli.main(["summary", "--config", debug]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("input 1x95x95, 10 classes")

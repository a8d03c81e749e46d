"""The store's training batches are the same whichever way they are made: crops cut on the host
or on the device, any number of loader threads, resumed mid-epoch or not."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from imagetree import make_tree

from alexnet2012.config import Config
from alexnet2012.data import build_data, transforms
from alexnet2012.data.prepare import prepare_main


@pytest.mark.parametrize("per_chunk", [None, 4])
@pytest.mark.parametrize("flip", [True, False])
def test_host_crop_cuts_what_the_device_crop_cuts(per_chunk, flip):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)  # (N, H, W, C) as stored
    rows = np.array([7, 2, 2, 11, 0, 5, 9, 3, 3])  # repeats and any order, as a batch's rows
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    x = torch.from_numpy(images[rows]).permute(0, 3, 1, 2)
    expect = transforms.random_crop_flip(x, 11, gen(), per_chunk=per_chunk, flip=flip)
    top, left, mirror = transforms.crop_draws(len(rows), 16, 16, 11, gen(), per_chunk)
    out = torch.zeros((len(rows), 11, 11, 3), dtype=torch.uint8)
    transforms.crop_into(
        torch.from_numpy(images), rows, top.numpy(), left.numpy(), mirror.numpy() & flip, 11, out
    )
    assert torch.equal(out.permute(0, 3, 1, 2), expect)
    if flip:
        assert mirror.any() and not mirror.all()  # both kinds of image were cut
    if per_chunk:
        assert (top[:8].view(2, 4) == top[:8:4, None]).all()  # one draw per chunk


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    work = tmp_path_factory.mktemp("store")
    prepare_main(str(make_tree(work / "src")), str(work / "dst"), size=32, workers=0)
    return work / "dst"


def batches(store, start=0, **data):
    cfg = Config()
    cfg.data.name, cfg.data.root = "imagefolder", str(store)
    cfg.model.preset = data.pop("preset", "original")
    for k, v in data.items():
        setattr(cfg.data, k, v)
    d = build_data(cfg, 28, "cpu")
    return [(x.clone(), y.clone()) for x, y in d.train_batches(1, 4, 3, start=start)]


def equal(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("preset", ["original", "paper"])
@pytest.mark.parametrize("noise", ["code", "none"])
def test_host_and_device_crops_give_the_same_batches(store, preset, noise):
    host = batches(store, preset=preset, colour_noise=noise, crop_on="host", workers=0)
    device = batches(store, preset=preset, colour_noise=noise, crop_on="device", workers=0)
    assert len(host) >= 3 and host[0][0].shape == (4, 3, 28, 28)
    assert host[0][0].is_contiguous()  # the layout the device crop gives the net
    assert equal(host, device)
    assert not torch.equal(host[0][0], host[1][0])


@pytest.mark.parametrize("crop_on", ["host", "device"])
def test_loader_threads_change_nothing(store, crop_on):
    inline = batches(store, crop_on=crop_on, workers=0)
    for workers in (1, 3):
        assert equal(batches(store, crop_on=crop_on, workers=workers), inline), workers
    assert equal(batches(store, start=2, crop_on=crop_on, workers=3), inline[2:])


def test_flip_off_keeps_the_crops(store):
    on, off = batches(store, flip=True, workers=0), batches(store, flip=False, workers=0)
    assert not equal(on, off)
    plain = batches(store, flip=False, crop_on="device", workers=0)
    assert equal(off, plain)


def test_loadbench_reports_each_part(store, capsys):
    from alexnet2012.bench import loadbench

    argv = ["--store", str(store), "--size", "28", "--batch", "4", "--batches", "3"]
    threads = torch.get_num_threads()
    assert loadbench.main([*argv, "--workers", "1", "2"]) == 0
    assert torch.get_num_threads() == threads  # later tests' numerics depend on it
    out = json.loads(capsys.readouterr().out)
    parts = out["one_core"]
    assert set(parts) == {
        "crop_flip_uint8",
        "host_part_crop_on_host",
        "host_part_crop_on_device",
        "cpu_only_crop_on_host",
        "cpu_only_crop_on_device",
        "cpu_only_eval_centre",
        "cpu_only_eval_ten_view",
    }
    assert all(p["img_per_cpu_s"] > 0 and p["img_s"] > 0 for p in parts.values())
    assert set(out["threads_img_s"]) == {"1", "2"}
    need = out["cores_needed"]["cpu_only_crop_on_host"]
    rate = parts["cpu_only_crop_on_host"]["img_per_cpu_s"]
    assert need == {"2000": math.ceil(2000 / rate), "11000": math.ceil(11000 / rate)}


def test_loadbench_cold_drops_the_cache_per_thread_count(store, capsys, monkeypatch):
    from alexnet2012.bench import loadbench

    drops = []
    monkeypatch.setattr(loadbench, "drop_page_cache", lambda: drops.append(1))
    argv = ["--store", str(store), "--size", "28", "--batch", "4", "--batches", "2", "--cold"]
    assert loadbench.main([*argv, "--workers", "1", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["threads_img_s_cold"]) == {"1", "3"} and len(drops) == 2
    assert all(v > 0 for v in out["threads_img_s_cold"].values())


def test_loadbench_cold_without_root_says_so(monkeypatch):
    from pathlib import Path

    from alexnet2012.bench import loadbench

    def refuse(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_text", refuse)
    with pytest.raises(SystemExit, match="--cold needs root"):
        loadbench.drop_page_cache()

"""The JPEG store: written, resumed, its statistics from the decoded pixels, its batches those of
a raw store holding the same pixels (decoded on loader threads or in one batch as on a GPU), and
damaged stores refused in one line."""

from __future__ import annotations

import json
import shutil
import zlib

import numpy as np
import pytest
import torch
from imagetree import make_tree
from PIL import Image

from alexnet2012 import cli
from alexnet2012.config import Config
from alexnet2012.data import DataError, Store, build_data
from alexnet2012.data.jpegstore import decode_host
from alexnet2012.data.prepare import prepare_main
from alexnet2012.data.writer import save_npy


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    work = tmp_path_factory.mktemp("jpeg")
    src = make_tree(work / "src")
    prepare_main(str(src), str(work / "jpeg"), size=32, workers=0, images="jpeg")
    prepare_main(str(src), str(work / "raw"), size=32, workers=0)
    return work


def decoded(root, split) -> np.ndarray:
    index = np.load(root / f"{split}_index.npy")
    blob = (root / f"{split}_images.jpeg").read_bytes()
    return np.stack([decode_host(blob[o : o + n]) for o, n, _ in index])


def test_jpeg_store_files_report_and_statistics(stores):
    root = stores / "jpeg"
    meta = json.loads((root / "meta.json").read_text())
    assert meta["images"] == "jpeg" and not (root / "train_images.npy").exists()
    index = np.load(root / "train_index.npy")
    assert index.shape == (14, 3)
    assert (index[1:, 0] == index[:-1, :2].sum(1)).all()  # back to back
    assert index[-1, :2].sum() == (root / "train_images.jpeg").stat().st_size
    report = meta["jpeg"]["train"]
    assert report["bytes_per_image"] == index[:, 1].mean() and report["bytes_per_image"] < 3000
    raw = np.load(stores / "raw" / "train_images.npy").astype(int)
    x = decoded(root, "train")
    err = np.abs(x.astype(int) - raw)
    assert report["max_abs_error"] == err.max() > 0
    assert report["mean_abs_error"] == pytest.approx(err.mean()) and err.mean() < 3
    # mean image and PCA of the decoded pixels, not the raw ones (ref §3)
    np.testing.assert_allclose(np.load(root / "mean.npy"), x.mean(0), atol=1e-4)
    vals = np.linalg.eigvalsh(np.cov(x.reshape(-1, 3).T.astype(np.float64), bias=True))
    np.testing.assert_allclose(Store(root).pca_stdevs, np.sqrt(vals), rtol=1e-6)
    assert (Store(root).images("val")[np.arange(6)] == decoded(root, "val")).all()
    labels = np.load(stores / "raw" / "train_labels.npy")
    assert (np.load(root / "train_labels.npy") == labels).all()


def test_jpeg_store_resumes_byte_identical(stores, tmp_path):
    src, dst = stores / "src", tmp_path / "dst"

    def crash(split, done):
        if split == "train" and done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_main(str(src), str(dst), 32, workers=0, chunk=4, images="jpeg", on_commit=crash)
    with open(dst / "train_images.jpeg", "ab") as f:
        f.write(b"bytes a crash left after the last commit")
    with pytest.raises(DataError, match="another size or another --format"):
        prepare_main(str(src), str(dst), size=32, workers=0, chunk=4)  # raw into a JPEG DST
    again = prepare_main(str(src), str(dst), size=32, workers=0, chunk=4, images="jpeg")
    assert again["resumed"] and again["jpeg"]["train"]["bytes_per_image"] > 0
    for name in ("train_images.jpeg", "train_index.npy", "val_images.jpeg", "mean.npy"):
        assert (dst / name).read_bytes() == (stores / "jpeg" / name).read_bytes(), name


def batches(root, **data):
    cfg = Config()
    cfg.data.name, cfg.data.root, cfg.model.preset = "imagefolder", str(root), "original"
    for k, v in data.items():
        setattr(cfg.data, k, v)
    d = build_data(cfg, 28, "cpu")
    train = [(x.clone(), y.clone()) for x, y in d.train_batches(1, 4, 3)]
    return train + [(x.clone(), y.clone()) for x, y in d.eval_batches(4, ten_view=True)]


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True)
    )


def test_jpeg_batches_are_a_raw_store_of_the_decoded_pixels(stores, tmp_path):
    twin = tmp_path / "twin"  # a raw store holding the JPEG store's decoded pixels
    shutil.copytree(stores / "jpeg", twin)
    meta = json.loads((twin / "meta.json").read_text())
    del meta["images"]
    (twin / "meta.json").write_text(json.dumps(meta))
    for split in ("train", "val"):
        save_npy(twin / f"{split}_images.npy", decoded(twin, split))
    expect = batches(twin, workers=0)
    assert len(expect) >= 4
    assert same(batches(stores / "jpeg", crop_on="host", workers=2), expect)
    assert same(batches(stores / "jpeg", crop_on="device", workers=0), expect)
    # the GPU path (one batched decode_jpeg call on the device, cut there) run on the CPU
    assert same(batches(stores / "jpeg", decode_on="device", workers=2), expect)


@pytest.mark.parametrize("where", ["start", "middle"])
def test_damaged_jpeg_store_says_so(stores, tmp_path, where):
    bad = tmp_path / "bad"
    shutil.copytree(stores / "jpeg", bad)
    index = np.load(bad / "train_index.npy")
    offset, length, _ = index[3]
    with open(bad / "train_images.jpeg", "r+b") as f:
        if where == "start":  # no JPEG start marker, its CRC made to match: the decoder says so
            f.seek(offset)
            f.write(b"\0" * 16)
            f.seek(offset)
            index[3, 2] = zlib.crc32(f.read(length))
            save_npy(bad / "train_index.npy", index)
        else:  # one byte of the compressed data: it would decode, wrongly; the CRC says so
            f.seek(offset + length // 2)
            byte = f.read(1)
            f.seek(offset + length // 2)
            f.write(bytes([byte[0] ^ 0x55]))
    want = "does not decode.*" + ("(JPEG|RuntimeError)" if where == "start" else "CRC-32")
    for decode_on in ("host", "device"):
        with pytest.raises(DataError, match=want + ".*rerun") as e:
            batches(bad, decode_on=decode_on, workers=0)
        assert "train_images.jpeg" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("cut", ["rows", "blob"])
def test_truncated_index_or_file_is_refused(stores, tmp_path, cut):
    bad = tmp_path / "bad"
    shutil.copytree(stores / "jpeg", bad)
    if cut == "rows":
        save_npy(bad / "train_index.npy", np.load(bad / "train_index.npy")[:9])
    else:
        with open(bad / "train_images.jpeg", "r+b") as f:
            f.truncate(100)
    with pytest.raises(DataError, match="truncated or damaged.*rerun") as e:
        batches(bad)
    assert "train_index.npy" in str(e.value)


def test_wrong_store_format_for_the_config(stores, tmp_path, capsys):
    with pytest.raises(DataError, match="holds a raw store, but data.images=jpeg"):
        batches(stores / "raw", images="jpeg")
    with pytest.raises(DataError, match="holds a jpeg store, but data.images=raw"):
        batches(stores / "jpeg", images="raw")
    run = ["train", "data.name=imagefolder", f"data.root={stores / 'jpeg'}", "data.images=raw"]
    assert cli.main([*run, f"run.dir={tmp_path / 'run'}", "train.device=cpu"]) == 2
    assert "data.images=raw" in capsys.readouterr().err
    assert (stores / "jpeg" / "meta.json").is_file()


def test_loadbench_measures_a_jpeg_store(stores, capsys):
    from alexnet2012.bench import loadbench

    argv = ["--store", str(stores / "jpeg"), "--size", "28", "--batch", "4", "--batches", "3"]
    assert loadbench.main([*argv, "--workers", "1", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"decode_uint8", "crop_flip_uint8", "cpu_only_eval_ten_view"} <= set(out["one_core"])
    assert all(p["img_per_cpu_s"] > 0 for p in out["one_core"].values())
    assert set(out["threads_img_s"]) == {"1", "2"} == set(out["threads_why"])
    assert (
        out["threads_why"]["2"]["cores_busy"] > 0
        and "switches_per_image" in out["threads_why"]["1"]
    )


def test_jpegbench_on_a_picture_and_delivery(stores, tmp_path, capsys):
    from alexnet2012.bench import jpegbench

    rng = np.random.default_rng(0)  # a smooth picture, not a photograph: the code path only
    picture = np.cumsum(rng.integers(-3, 4, (300, 400, 3)), 1).clip(0, 255).astype(np.uint8)
    path = tmp_path / "picture.png"
    Image.fromarray(picture).save(path)
    assert len(jpegbench.squares(path)) == 1  # 300 px high: only the 256 scale fits
    argv = [str(path), "--qualities", "50", "90", "--tree", str(tmp_path / "tree"), "--copies", "5"]
    assert jpegbench.main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows[0]["kb_per_image"] < rows[1]["kb_per_image"]
    assert rows[0]["mean_abs_error"] > rows[1]["mean_abs_error"] > 0
    assert len(list((tmp_path / "tree" / "train").rglob("*.png"))) == 4
    assert jpegbench.delivered(str(stores / "jpeg"), 28, 4, 3, 2, "cpu") > 0

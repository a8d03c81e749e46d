"""ImageFolder trees to the prepared store: shards, resume after a crash, bad files, splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from imagetree import jpeg, make_tree

from alexnet2012.data import DataError, Store, prepare
from alexnet2012.data.prepare import prepare_main


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "src")


def stored(dst: Path) -> dict:
    return {
        name: np.load(dst / f"{name}.npy")
        for name in ("train_images", "train_labels", "val_images", "val_labels", "mean")
    }


def test_prepare_store(tree, tmp_path):
    summary = prepare_main(str(tree), str(tmp_path / "dst"), size=32, workers=0)
    assert summary["classes"] == 3 and summary["train"] == 14 and summary["val"] == 6
    assert summary["files"] == 23 and summary["bad_count"] == 3 and not summary["resumed"]
    bad = {b["file"]: b["reason"] for b in summary["bad"]}
    assert set(bad) == {"train/cat/notes.txt", "train/cat/truncated.JPEG", "val/bee/empty.JPEG"}
    assert "0 bytes" in bad["val/bee/empty.JPEG"] and "not an image" in bad["train/cat/notes.txt"]
    assert "truncated" in bad["train/cat/truncated.JPEG"]
    s = stored(tmp_path / "dst")
    assert s["train_images"].shape == (14, 32, 32, 3) and s["train_images"].dtype == np.uint8
    assert s["train_labels"].tolist() == [0] * 5 + [1] * 5 + [2] * 4
    assert s["val_images"].shape == (6, 32, 32, 3) and s["mean"].shape == (32, 32, 3)
    # files sort as ant0..3, cmyk: the CMYK red and the greyscale image were converted and kept
    cmyk, grey = s["train_images"][4].reshape(-1, 3), s["train_images"][9].reshape(-1, 3)
    assert np.abs(np.median(cmyk, 0) - [255, 0, 0]).max() < 20
    assert (grey[:, 0] == grey[:, 1]).all() and (grey[:, 1] == grey[:, 2]).all()
    # mean image and PCA are those of the stored training pixels (ref §3)
    np.testing.assert_allclose(s["mean"], s["train_images"].mean(0), atol=1e-4)
    store = Store(tmp_path / "dst")
    pixels = s["train_images"].reshape(-1, 3).astype(np.float64)
    vals, vecs = np.linalg.eigh(np.cov(pixels.T, bias=True))
    np.testing.assert_allclose(store.pca_stdevs, np.sqrt(vals), rtol=1e-6)
    np.testing.assert_allclose(np.abs(store.pca_eigvecs), np.abs(vecs), atol=1e-6)
    assert store.classes == ["ant", "bee", "cat"] and store.images("val").shape[0] == 6
    again = prepare_main(str(tree), str(tmp_path / "dst"), size=32, workers=0)
    assert again["already_done"] and again["train"] == 14


def test_prepare_stop_on_bad(tree, tmp_path):
    with pytest.raises(DataError, match="on_bad=skip") as e:
        prepare_main(str(tree), str(tmp_path / "dst"), size=32, on_bad="stop", workers=0)
    assert "notes.txt" in str(e.value)  # the first bad file in sorted order


def test_prepare_resumes(tree, tmp_path, monkeypatch):
    real, calls = prepare.load_image, []

    def crashing(path, size):
        calls.append(path)
        if len(calls) == 11:
            raise RuntimeError("simulated crash")
        return real(path, size)

    monkeypatch.setattr(prepare, "load_image", crashing)
    with pytest.raises(RuntimeError, match="simulated"):
        prepare_main(str(tree), str(tmp_path / "dst"), size=32, workers=0, chunk=4)
    with pytest.raises(DataError, match="unfinished"):
        Store(tmp_path / "dst")
    calls.clear()
    monkeypatch.setattr(
        prepare, "load_image", lambda path, size: calls.append(path) or real(path, size)
    )
    summary = prepare_main(str(tree), str(tmp_path / "dst"), size=32, workers=0, chunk=4)
    assert summary["resumed"] and summary["train"] == 14 and summary["bad_count"] == 3
    assert len(calls) == 23 - 8  # the two finished chunks were not redone
    monkeypatch.setattr(prepare, "load_image", real)
    prepare_main(str(tree), str(tmp_path / "ref"), size=32, workers=2, chunk=5)
    a, b = stored(tmp_path / "dst"), stored(tmp_path / "ref")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    meta_a, meta_b = (json.loads((tmp_path / d / "meta.json").read_text()) for d in ("dst", "ref"))
    assert meta_a["pca"] == meta_b["pca"] and meta_a["splits"] == meta_b["splits"]
    assert (
        not list((tmp_path / "dst").glob("stats-*"))
        and not (tmp_path / "dst/progress.json").exists()
    )


def test_prepare_one_tree_splits(tmp_path):
    for c in ("x", "y"):
        for i in range(10):
            jpeg(tmp_path / "one" / c / f"{i}.jpg", (33, 33), (10 * i, 100, 50))
    summary = prepare_main(str(tmp_path / "one"), str(tmp_path / "dst"), size=32, workers=0)
    assert "90/10" in summary["split"] and (summary["train"], summary["val"]) == (18, 2)
    assert Store(tmp_path / "dst").meta["splits"]["val"]["class_counts"] == [1, 1]

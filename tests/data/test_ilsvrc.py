"""ILSVRC-2012 as users have it, prepared: every layout gives the ImageFolder tree's store.

The sets are made here (tests/imagetree.py), never downloaded: four synsets in the official
archives (a tar of per-synset tars, a flat val tar, a devkit .tar.gz with a scipy-written
meta.mat), their extracted layout, and Kaggle's CLS-LOC; with CMYK, greyscale, PNG-named-JPEG,
truncated and EXIF-rotated files.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from imagetree import (
    LEAVES,
    SYNSETS,
    encoded,
    ilsvrc_images,
    meta_mat,
    write_archives,
    write_cls_loc,
    write_extracted,
    write_image_folder,
)
from PIL import Image

from alexnet2012.data import DataError, Store
from alexnet2012.data.decode import decode, jpeg_decoder, square
from alexnet2012.data.ilsvrc import leaf_synsets
from alexnet2012.data.prepare import prepare_main

ARRAYS = ("train_images", "train_labels", "val_images", "val_labels", "mean")
WORDS = {w: text for _, w, text, c in SYNSETS if not c}
ODD = {"cmyk": 1, "exif_orientation_ignored": 1, "format_png": 1, "greyscale": 1}


@pytest.fixture(scope="module")
def images() -> dict:
    return ilsvrc_images()


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> Path:
    """The store of the equivalent ImageFolder tree (val sorted into class folders)."""
    tmp = tmp_path_factory.mktemp("reference")
    src = write_image_folder(tmp / "src", images)
    summary = prepare_main(str(src), str(tmp / "dst"), size=32, workers=0)
    assert summary["layout"] == "ImageFolder" and summary["oddities"] == ODD
    return tmp / "dst"


def same_store(a: Path, b: Path) -> None:
    """Same images, labels, mean, PCA, classes, counts and oddities; bad files by base name."""
    for name in ARRAYS:
        np.testing.assert_array_equal(np.load(a / f"{name}.npy"), np.load(b / f"{name}.npy"))
    ma, mb = (json.loads((d / "meta.json").read_text()) for d in (a, b))
    assert ma["classes"] == mb["classes"] == LEAVES and ma["pca"] == mb["pca"]
    for split in ("train", "val"):
        sa, sb = ma["splits"][split], mb["splits"][split]
        for key in ("count", "files", "class_counts", "oddities"):
            assert sa[key] == sb[key], (split, key)
        assert [Path(x["file"]).name for x in sa["bad"]] == [
            Path(x["file"]).name for x in sb["bad"]
        ]


LAYOUTS = {  # name: (write SRC, SRC to give, layout reported, decoding workers)
    "archives": (lambda r, i: write_archives(r, i), "", "ILSVRC-2012 archives", 2),
    "extracted tars": (lambda r, i: write_extracted(r, i, True), "", "ILSVRC-2012 extracted", 0),
    "extracted dirs": (lambda r, i: write_extracted(r, i, False), "", "ILSVRC-2012 extracted", 0),
    "cls-loc": (write_cls_loc, "", "Kaggle ILSVRC CLS-LOC", 0),
    "cls-loc folder": (write_cls_loc, "ILSVRC/Data/CLS-LOC", "Kaggle ILSVRC CLS-LOC", 0),
    "one archive named": (write_archives, "ILSVRC2012_img_val.tar", "ILSVRC-2012 archives", 0),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layouts_give_the_image_folder_store(layout, images, reference, tmp_path):
    write, given, says, workers = LAYOUTS[layout]
    src = write(tmp_path / "src", images) / given
    summary = prepare_main(str(src), str(tmp_path / "dst"), size=32, workers=workers)
    assert summary["layout"].startswith(says), summary["layout"]
    assert (summary["train"], summary["val"], summary["bad_count"]) == (16, 8, 1)
    assert summary["oddities"] == ODD and "truncated" in summary["bad"][0]["reason"]
    same_store(tmp_path / "dst", reference)
    store = Store(tmp_path / "dst")
    assert store.classes == LEAVES and store.class_names == [WORDS[w] for w in LEAVES]


def test_labels_follow_the_devkit_ids(reference):
    """Val labels: ground-truth ILSVRC2012_IDs mapped through meta.mat, indexed by sorted WNID."""
    store = Store(reference)
    assert store.labels("val").tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert store.labels("train").tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    wnid_of, words = leaf_synsets(meta_mat(), "meta.mat")
    assert wnid_of == {1: "n02119789", 2: "n02100735", 3: "n01440764", 4: "n01443537"}
    assert words["n01440764"] == "tench, Tinca tinca" and "n02512053" not in words  # a parent


def test_exif_orientation_is_ignored(reference):
    """The EXIF-rotated photo (60x40, left half magenta, orientation 6) is stored unrotated."""
    exif = Store(reference).images("train")[15].astype(int)  # n02119789_exif.JPEG
    assert np.abs(exif[:, 2] - [255, 0, 255]).max() < 40  # left column magenta on every row
    assert np.abs(exif[:, -3] - [0, 0, 255]).max() < 40  # right column blue


def test_cmyk_grey_png_converted(reference):
    train = Store(reference).images("train")
    cmyk, grey, png = train[3], train[7], train[11]  # per class, sorted file names
    assert np.abs(np.median(cmyk[:, -4:].reshape(-1, 3), 0) - [255, 0, 0]).max() < 20
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert np.abs(png[:, -4:].reshape(-1, 3) - [10, 200, 10]).max() <= 1  # lossless PNG


def test_stop_on_bad_names_the_member(images, tmp_path):
    src = write_archives(tmp_path / "src", images)
    with pytest.raises(DataError, match="n02119789.tar/n02119789_truncated.JPEG: truncated"):
        prepare_main(str(src), str(tmp_path / "dst"), size=32, on_bad="stop", workers=0)
    with pytest.raises(DataError, match="no prepared image store"):  # stopped before a commit
        Store(tmp_path / "dst")


def test_train_tar_alone_splits(images, tmp_path):
    src = write_archives(tmp_path / "src", images)
    (src / "ILSVRC2012_img_val.tar").unlink()
    (src / "ILSVRC2012_devkit_t12.tar.gz").unlink()
    summary = prepare_main(str(src), str(tmp_path / "dst"), size=32, workers=0)
    assert "90/10" in summary["split"] and summary["train"] + summary["val"] == 16
    assert Store(tmp_path / "dst").class_names == LEAVES  # no devkit: no words


def test_fast_paths_change_nothing(images):
    """decode_jpeg gives PIL's pixels bit for bit; draft mode stays close to a full decode."""
    big = encoded((400, 300), (90, 140, 40))  # >= 2x the stored size: decoded in draft mode
    rgb = Image.open(io.BytesIO(big)).convert("RGB")
    full = square(np.array(rgb), 32)
    drafted = decode(big, 32)[0]
    assert min(drafted.shape[:2]) == 38  # 1/8 scale: libjpeg's smallest that keeps >= 32
    assert np.abs(square(drafted, 32).astype(int) - full).mean() < 3  # a hard edge differs most
    if jpeg_decoder() is None:
        pytest.skip("torchvision is not installed")
    small = [d for files in images["train"].values() for d in files.values()][:8]
    for data in small:
        with_tv = decode(data, 32)[0]
        np.testing.assert_array_equal(with_tv, decode(data, 32, torchvision=False)[0])

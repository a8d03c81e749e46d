"""The configured data's shape, decided once and without loading it: classes, image channels
and training images per epoch, as ``train``, ``bench``, ``summary`` and the run estimate need it.

Fashion-MNIST: 10 classes of 1-channel images, 60,000 training images; the synthetic set: 10
classes of 3-channel images, ``data.synthetic_size`` of them; a prepared store: its own class
list and count (ILSVRC-2012's 1000 classes and 1,281,167 training images when no store is named).
The data sets themselves (data/sources.py) are built from the same constants.
"""

from __future__ import annotations

from alexnet2012.config import Config
from alexnet2012.data.fashion_mnist import CLASSES as FASHION_MNIST_CLASSES

FASHION_MNIST_TRAIN, FASHION_MNIST_CHANNELS = 60_000, 1
SYNTHETIC_CLASSES, SYNTHETIC_CHANNELS = 10, 3
ILSVRC2012_TRAIN, ILSVRC2012_CLASSES = 1_281_167, 1000


def data_shape(cfg: Config) -> tuple[int, int, int]:
    """(classes, channels, training images per epoch) of ``cfg.data``."""
    d = cfg.data
    if d.name == "fashion_mnist":
        classes, channels = len(FASHION_MNIST_CLASSES), FASHION_MNIST_CHANNELS
        n = FASHION_MNIST_TRAIN
    elif d.name == "synthetic":
        classes, channels, n = SYNTHETIC_CLASSES, SYNTHETIC_CHANNELS, d.synthetic_size
    else:
        classes, channels, n = ILSVRC2012_CLASSES, 3, ILSVRC2012_TRAIN
        if d.root:  # the store says how many classes it holds
            from alexnet2012.data.store import Store

            store = Store(d.root)
            classes, n = len(store.classes), store.count("train")
    n -= d.val_size  # held out for validation (data/loader.py splits)
    return classes, channels, min(n, d.train_subset) if d.train_subset else n

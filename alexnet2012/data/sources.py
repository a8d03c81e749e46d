"""The three data sets, and :func:`build_data`, which builds the one a config names.

- ``fashion_mnist``: held in device memory as uint8; per batch resized (bilinear, as d2l), randomly
  cropped when ``data.resize`` exceeds the input size, flipped, standardised.
- ``imagefolder``: a store made by ``alexnet2012 prepare``, memory-mapped (or JPEGs, decoded on
  the loader threads or in batches on the device); the 2012 pipeline of ref §3 (random crop +
  flip, mean-image subtraction, PCA colour noise).
- ``synthetic``: a fixed random set a small net can learn, for tests and benchmarks.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

import alexnet2012.data.fashion_mnist as fashion_mnist
from alexnet2012.config import Config, pixel_scale
from alexnet2012.data.errors import DataError
from alexnet2012.data.folder import FolderData
from alexnet2012.data.loader import STREAM_SYNTHETIC, Data, generator, splits
from alexnet2012.data.shape import FASHION_MNIST_CHANNELS, SYNTHETIC_CHANNELS, SYNTHETIC_CLASSES
from alexnet2012.data.transforms import (
    center_crop,
    random_crop_flip,
    ten_views,
    to_device,
)

log = logging.getLogger(__name__)


class FashionMNISTData(Data):
    """Fashion-MNIST, 1 channel; ``pixels=unit, flip=false, resize=0`` is d2l's pipeline.

    Pixels (``pixel_scale``, ref §3): ``c12`` 0-255 minus the training mean image (resized as
    the images are: bilinear resizing is linear, so the mean of resized images is the resized
    mean), ``standard`` mean 0 and std 1 over the training pixels, ``unit`` [0, 1] ([D2L]).
    """

    def __init__(self, cfg, input_size: int, device: torch.device):
        d = cfg.data
        self.resize = d.resize or input_size  # size before the random crop
        if self.resize < input_size:
            raise DataError(
                f"data.resize={d.resize} is below the input size {input_size}; "
                f"set it to 0 or at least {input_size}"
            )
        raw = fashion_mnist.load(d.root)
        idx = splits(len(raw["train_labels"]), len(raw["test_labels"]), d)
        source = {"train": "train", "val": "train" if d.val_size else "test", "test": "test"}
        self.x = {k: raw[f"{source[k]}_images"][i].to(device) for k, i in idx.items()}
        self.y = {k: raw[f"{source[k]}_labels"][i].to(device) for k, i in idx.items()}
        train = raw["train_images"][idx["train"]]
        # mean and std of the training pixels in [0, 1], exactly, from their histogram
        hist = torch.bincount(train.flatten(), minlength=256).double()
        values = torch.arange(256, dtype=torch.float64) / 255
        self.mean = float((hist * values).sum() / hist.sum())
        self.std = float(((hist * (values - self.mean) ** 2).sum() / hist.sum()).sqrt())
        self.pixels, self.flip = pixel_scale(cfg), d.flip
        self.input_size = input_size
        # ref §3: [C12] subtracts the mean image's centre patch from every crop, 0-255 units
        mean_image = train.double().mean(0, keepdim=True).float()  # (1, 1, 28, 28)
        self.mean_patch = center_crop(self._scaled(mean_image)[0], input_size).to(device)
        super().__init__(
            name="fashion_mnist",
            classes=fashion_mnist.CLASSES,
            in_channels=FASHION_MNIST_CHANNELS,
            sizes={k: len(i) for k, i in idx.items()},
            held_out=bool(d.val_size),
            input_size=input_size,
            device=device,
        )

    def _fetch(self, split, idx):
        idx = to_device(idx, self.device)  # no host sync in the step
        return self.x[split][idx], self.y[split][idx]

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 1, 28, 28) -> float (B, 1, resize, resize): 0-255 for c12, else [0, 1]."""
        x = x.float() if self.pixels == "c12" else x.float() / 255
        if x.shape[-2:] != (self.resize, self.resize):  # [D2L]: bilinear upsampling
            x = F.interpolate(
                x,
                size=(self.resize, self.resize),
                mode="bilinear",
                align_corners=False,
                antialias=False,
            )
        return x

    def _rescaled(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_scaled` pixels -> the configured input scale."""
        if self.pixels == "c12":
            return x - self.mean_patch
        return (x - self.mean) / self.std if self.pixels == "standard" else x  # [D2L]: [0, 1]

    def _augment(self, x, gen, epoch=0):
        x = self._scaled(x)
        if self.resize > self.input_size or self.flip:
            x = random_crop_flip(x, self.input_size, gen, flip=self.flip)
        return self._rescaled(x)

    def _views(self, x, ten_view):
        x = self._scaled(x)
        x = ten_views(x, self.input_size) if ten_view else center_crop(x, self.input_size)
        return self._rescaled(x)


class SyntheticData(Data):
    """10 classes of 3-channel images: a class colour and stripe pattern plus smooth noise.

    Fixed (not seeded by the run) so every run and benchmark sees the same images; rendered on
    the device per batch from small per-image latents, so any ``input_size`` is cheap.
    """

    def __init__(self, cfg, input_size: int, device: torch.device):
        n_train = cfg.data.synthetic_size
        n_test = max(10, n_train // 4)
        n, s = n_train + n_test, input_size
        g = generator(STREAM_SYNTHETIC)
        c, ch = SYNTHETIC_CLASSES, SYNTHETIC_CHANNELS  # data/shape.py: 10 classes, 3 channels
        self.colours = (torch.rand(c, ch, generator=g) * 2 - 1).to(device)  # (10, 3)
        labels = (torch.arange(n) % c)[torch.randperm(n, generator=g)]
        noise = torch.randn(n, ch, 4, 4, generator=g)  # upsampled to smooth noise
        k = torch.arange(c)
        coords = (torch.arange(s) + 0.5) / s
        wave = torch.sin(2 * math.pi * (1 + k // 2)[:, None] * coords)  # (10, S): 1-5 cycles
        rows, cols = wave[:, :, None].expand(c, s, s), wave[:, None, :].expand(c, s, s)
        self.patterns = torch.where((k % 2 == 0)[:, None, None], rows, cols).to(device)
        idx = splits(n_train, n_test, cfg.data)
        if not cfg.data.val_size:
            idx["val"] = idx["val"] + n_train  # the test images, as "test" below
        idx["test"] = idx["test"] + n_train  # the test images follow the training ones
        self.latent = {k: (labels[i].to(device), noise[i].to(device)) for k, i in idx.items()}
        self.flip = cfg.data.flip
        super().__init__(
            name="synthetic",
            classes=[f"class{i}" for i in range(c)],
            in_channels=ch,
            sizes={k: len(i) for k, i in idx.items()},
            held_out=bool(cfg.data.val_size),
            input_size=input_size,
            device=device,
        )

    def _fetch(self, split, idx):
        labels, noise = self.latent[split]
        idx = to_device(idx, self.device)  # no host sync in the step
        y = labels[idx]
        s = self.input_size
        smooth = F.interpolate(noise[idx], size=(s, s), mode="bilinear", align_corners=False)
        x = 0.8 * self.colours[y][:, :, None, None] + 0.5 * self.patterns[y][:, None] + 0.5 * smooth
        return x, y

    def _augment(self, x, gen, epoch=0):
        return random_crop_flip(x, self.input_size, gen) if self.flip else x

    def _views(self, x, ten_view):
        return ten_views(x, self.input_size) if ten_view else x


# each of config.DATA_NAMES (data.name's choices), in its order (tests/config/test_derived.py)
SOURCES = {"fashion_mnist": FashionMNISTData, "imagefolder": FolderData, "synthetic": SyntheticData}


def build_data(cfg: Config, input_size: int, device: torch.device | str) -> Data:
    """The data set ``cfg.data.name`` names, producing ``input_size`` images on ``device``."""
    if cfg.data.name not in SOURCES:
        raise DataError(f"data.name {cfg.data.name!r} is not one of {', '.join(SOURCES)}")
    data = SOURCES[cfg.data.name](cfg, input_size, torch.device(device))
    log.info("data: %r", data)
    return data

"""``imagefolder``: a store made by ``alexnet2012 prepare``, with the 2012 pipeline (ref §3).

The raw store is memory-mapped; a JPEG store (:mod:`.jpegstore`) is decoded on the loader
threads, or in batches on a CUDA device (``data.decode_on``). Crops and flips are cut in uint8
on the loader threads (``data.crop_on=host``) or on the device, from the same draws, so both
give the same batches; mean-image subtraction and PCA colour noise run on the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from alexnet2012.config import pixel_scale
from alexnet2012.data.errors import DataError
from alexnet2012.data.jpegstore import JpegImages
from alexnet2012.data.loader import Data, splits
from alexnet2012.data.store import Store
from alexnet2012.data.transforms import (
    C12_CROP_CHUNK,
    ILSVRC2012_PCA_EIGVECS,
    ILSVRC2012_PCA_STDEVS,
    center_crop,
    crop_draws,
    crop_into,
    mapped,
    pca_noise,
    random_crop_flip,
    ten_views,
    to_device,
)


def _decode_on_device(store: Store, d, device: torch.device) -> bool:
    """Whether a batch is decoded on the device (a JPEG store there, ``data.decode_on``): it is
    then cut there too; DataError if the store is not of the format ``data.images`` asks for."""
    if d.images not in ("any", store.kind):
        raise DataError(
            f"{store.root} holds a {store.kind} store, but data.images={d.images}; set "
            f"data.images={store.kind} (or any), or prepare a {d.images} store (--format)"
        )
    auto = device.type == "cuda" if d.decode_on == "auto" else d.decode_on == "device"
    return store.kind == "jpeg" and auto


def _read_into(images, rows: np.ndarray, out: np.ndarray) -> None:
    """The stored images of ``rows`` into ``out``: a JPEG store decodes each into its slot, a
    raw store's memory map is read in file order."""
    if isinstance(images, JpegImages):
        images.decode_into(rows, out)
        return
    order = np.argsort(rows, kind="stable")
    out[order] = images[rows[order]]


class FolderData(Data):
    """A prepared ImageNet-style store, with the 2012 training pipeline (ref §3)."""

    def __init__(self, cfg, input_size: int, device: torch.device):
        d = cfg.data
        store = Store(d.root)
        self.decode_on_device = _decode_on_device(store, d, device)
        self.store_size = store.size
        if store.size < input_size:
            raise DataError(
                f"{store.root} holds {store.size}px images, smaller than the input "
                f"size {input_size}; rerun prepare with a larger size"
            )
        if d.resize not in (0, store.size):
            raise DataError(
                f"data.resize={d.resize}, but {store.root} holds {store.size}px "
                f"images; set data.resize to 0 or {store.size}"
            )
        # "val" is held out of the store's train split, or is its val split (what [P] reports)
        source = {"train": "train", "val": "train" if d.val_size else "val", "test": "val"}
        self.images = {k: store.images(v) for k, v in source.items()}
        self.labels = {k: store.labels(v) for k, v in source.items()}
        held = splits(store.count("train"), store.count("val"), d)
        self.index = {k: v.numpy() for k, v in held.items()}
        # [C12] subtracts the mean image's centre input_size patch from every crop (ref §3)
        mean = torch.from_numpy(store.mean).permute(2, 0, 1)  # (3, 256, 256)
        self.mean_patch = center_crop(mean, input_size).contiguous().to(device)
        # pixels unit: no mean subtraction, pixels divided by 255 at the end, into [0, 1];
        # standard: the mean image off, divided by the pixels' std (the PCA's trace gives it)
        self.pixels, self.flip, self.noise = pixel_scale(cfg), d.flip, d.colour_noise
        self.noise_epochs = d.colour_noise_epochs
        self.std = math.sqrt(sum(float(v) ** 2 for v in store.pca_stdevs) / 3)
        if d.pca == "imagenet":  # ref §3: [C14]'s ILSVRC-2012 constants
            self.pca = (ILSVRC2012_PCA_STDEVS, ILSVRC2012_PCA_EIGVECS)
        else:  # ref §3: [C12] takes the PCA of its own training set (batch_meta['color_pca'])
            self.pca = (store.pca_stdevs, store.pca_eigvecs)
        # ref §1.3: [C12] (the "original" preset) draws one crop and flip per 32 images
        self.per_chunk = C12_CROP_CHUNK if cfg.model.preset == "original" else None
        self.crop_on_host = d.crop_on == "host" and not self.decode_on_device
        self.workers, raw = d.workers, store.kind == "raw"  # raw: the images as a tensor, no copy
        self.mapped = mapped(self.images["train"]) if raw else None
        super().__init__(
            name="imagefolder",
            classes=store.classes,
            in_channels=3,
            sizes={k: len(i) for k, i in self.index.items()},
            held_out=bool(d.val_size),
            input_size=input_size,
            device=device,
        )

    def _fetch(self, split, idx):
        if self.decode_on_device:  # (B, 3, 256, 256) decoded on the device in one batch
            rows = self.index[split][idx.numpy()]
            return self._to_device(
                self.images[split].on_device(rows, self.device), self.labels[split][rows]
            )
        x, y = self._to_device(*self._read(split, idx))
        return x.permute(0, 3, 1, 2), y  # (B, 3, 256, 256) uint8, cut on the device

    def _fetch_train(self, idx, gen):
        if not self.crop_on_host:
            return self._fetch("train", idx)
        x, y = self._to_device(*self._crops(idx, gen))
        # (B, 3, S, S) in the layout the device crop makes, so the float steps are the same
        return x.permute(0, 3, 1, 2).contiguous(), y

    def _read(self, split: str, idx: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """The stored (B, 256, 256, 3) uint8 images of ``idx`` and their labels, on the host."""
        rows, s = self.index[split][idx.numpy()], self.store_size
        batch = self._host_buffer((len(rows), s, s, 3))  # read straight into what is sent
        _read_into(self.images[split], rows, batch.numpy())
        return batch, self.labels[split][rows]

    def _crops(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
        """``data.crop_on=host``: the training batch's random crops and flips (B, S, S, 3) uint8
        and labels, cut on the (loader) thread straight from the memory map into a pinned
        buffer for a GPU; the float arithmetic (mean, colour noise, scale) stays on the device.
        """
        rows, s, n = self.index["train"][idx.numpy()], self.input_size, len(idx)
        top, left, mirror = crop_draws(n, self.store_size, self.store_size, s, gen, self.per_chunk)
        out = self._host_buffer((n, s, s, 3))
        mirror = mirror.numpy() & self.flip  # drawn either way, as random_crop_flip does
        jpeg = self.mapped is None  # a JPEG store: this thread decodes the batch, then cuts it
        src = torch.from_numpy(self.images["train"].decoded(rows)) if jpeg else self.mapped
        crop_into(src, np.arange(n) if jpeg else rows, top.numpy(), left.numpy(), mirror, s, out)
        return out, self.labels["train"][rows]

    def _host_buffer(self, shape: tuple) -> torch.Tensor:
        """A uint8 host buffer for a batch: pinned for a GPU, where the caching host allocator
        hands its blocks out again once their copies have run."""
        return torch.empty(shape, dtype=torch.uint8, pin_memory=self.device.type == "cuda")

    def _to_device(self, x: torch.Tensor, y: np.ndarray):
        """uint8 images and int64 labels on the device."""
        # pinned, non-blocking: queued on this thread's current stream, the default stream the
        # trainer computes on, so it is ordered before the step that uses it
        return to_device(x, self.device), to_device(torch.from_numpy(y), self.device)

    def _from_centred(self, x: torch.Tensor) -> torch.Tensor:
        """Mean-subtracted 0-255 pixels -> the configured input scale."""
        if self.pixels == "unit":
            return (x + self.mean_patch) / 255
        return x / self.std if self.pixels == "standard" else x

    def _augment(self, x, gen, epoch=0):
        # [P] §4.1, ref §3: random input_size crop and horizontal flip of the 256x256 image
        if not self.crop_on_host:  # else cut on the loader thread (_fetch_train)
            x = random_crop_flip(x, self.input_size, gen, per_chunk=self.per_chunk, flip=self.flip)
        x = x.float()
        # ref §2: [C12] turned colour noise off from epoch 67 (data.colour_noise_epochs=66)
        noise_off = self.noise_epochs and epoch >= self.noise_epochs
        if self.noise == "none" or noise_off:
            return x / 255 if self.pixels == "unit" else self._from_centred(x - self.mean_patch)
        # ref §1.3, §3: PCA colour noise, paper or code form. [C12] adds it to mean-subtracted
        # pixels, so the code form's 1/1.1 shrink acts around the mean image; for unit pixels
        # the mean goes back on afterwards
        x = pca_noise(x - self.mean_patch, *self.pca, gen, form=self.noise)
        return self._from_centred(x)

    def _views(self, x, ten_view):
        x = ten_views(x, self.input_size) if ten_view else center_crop(x, self.input_size)
        x = x.float()  # [C12] subtracts the centre mean patch from all 10 views too
        return x / 255 if self.pixels == "unit" else self._from_centred(x - self.mean_patch)

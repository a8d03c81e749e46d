"""The data interface the trainer uses: :class:`Data` (built by :func:`.sources.build_data`).

Everything random is counter-based, so a run is reproducible and identical on every rank of a
tower pair: epoch ``e``'s order is a permutation drawn from a generator seeded by
``(seed, e)``, and the augmentation of its batch ``i`` from one seeded by ``(seed, e, i)``. A
run resumed at batch ``k`` (``start=k``) therefore sees exactly the batches an unbroken run
would, and two processes with the same seed get bit-identical batches. Random numbers are drawn
on the CPU and moved to the device (pinned and non-blocking, so the training step never waits for
the copy: :func:`.transforms.to_device`), so they do not depend on the device either.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from alexnet2012.data.errors import DataError

log = logging.getLogger(__name__)

# stream tags keep the seeds of different uses apart
STREAM_ORDER, STREAM_AUGMENT, STREAM_SUBSET, STREAM_SYNTHETIC, STREAM_HOLDOUT = 1, 2, 3, 4, 5


def generator(*parts: int) -> torch.Generator:
    """A CPU generator whose seed is a hash (numpy SeedSequence) of the integers ``parts``."""
    entropy = [int(p) % 2**64 for p in parts]
    seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) >> 1
    return torch.Generator().manual_seed(seed)


def subset_index(n: int, keep: int, split: int) -> torch.Tensor:
    """Indices of the images a ``*_subset`` setting keeps, sorted; all of them when ``keep`` is 0.

    A subset is the first ``keep`` entries of a fixed permutation (seeded by the split number,
    not the run seed), so every run that asks for N images gets the same N, and the classes
    come out in roughly their overall proportions (first-N of a file is often one class).
    """
    if keep <= 0 or keep >= n:
        if keep > n:
            log.warning("asked for %d images but only %d exist; using all", keep, n)
        return torch.arange(n)
    order = torch.randperm(n, generator=generator(STREAM_SUBSET, split))
    return order[:keep].sort().values


def holdout(n: int, val_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, validation indices) of ``n`` training images, both sorted.

    The validation set is the first ``val_size`` entries of a fixed permutation (seeded by
    neither the run seed nor the subsets), so every run validates on the same images and never
    trains on them. ``val_size=0``: every image trains, the validation set is empty.
    """
    if val_size >= n:
        raise DataError(
            f"data.val_size={val_size} leaves no training images of the {n} there; set it below {n}"
        )
    if val_size <= 0:
        return torch.arange(n), torch.arange(0)
    order = torch.randperm(n, generator=generator(STREAM_HOLDOUT))
    return order[val_size:].sort().values, order[:val_size].sort().values


def splits(n_train: int, n_test: int, d) -> dict[str, torch.Tensor]:
    """Indices of "train", "val" and "test" for the ``data`` config ``d``.

    "train" and "val" index the stored training images, "test" the stored test images; "val" is
    "test" itself when ``d.val_size`` is 0. ``*_subset`` settings apply after the holdout.
    """
    train, val = holdout(n_train, d.val_size)
    test = subset_index(n_test, d.test_subset, 1)
    out = {"train": train[subset_index(len(train), d.train_subset, 0)], "test": test}
    out["val"] = val[subset_index(len(val), d.val_subset, 2)] if len(val) else test
    if d.val_subset and not len(val):
        out["val"] = test[subset_index(len(test), d.val_subset, 2)]
    return out


def ahead(fetch, items, workers: int) -> Iterator:
    """``fetch(item)`` for each item, in order; with ``workers`` threads, that many ahead.

    Each batch's randomness comes from its own generator, so the threads' timing cannot
    change a batch: any number of workers gives the batches of an inline fetch.
    """
    if not workers:
        yield from map(fetch, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="alexnet2012-data") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fetch, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class Data(ABC):
    """A data set ready for training: batches of float32 images (B, C, S, S) on the device.

    Subclasses provide ``_fetch(split, idx)`` (the stored images of ``idx`` on the device,
    and their labels), ``_augment(x, gen)`` (training view) and ``_views(x, ten_view)``; they
    may override ``_fetch_train(idx, gen)`` to start the augmentation on the host.
    Splits: "train", "val" (held-out training images, or the test split itself; see
    :func:`splits`) and "test"; ``sizes`` counts each, ``held_out`` says which "val" is.
    """

    # threads that fetch batches ahead of the step, in order (disk-backed data); 0: inline
    workers = 0

    def __init__(self, *, name, classes, in_channels, sizes, held_out, input_size, device):
        self.name: str = name
        self.sizes: dict[str, int] = dict(sizes)
        self.held_out: bool = held_out
        self.classes: list[str] = list(classes)
        self.num_classes: int = len(self.classes)
        self.in_channels: int = in_channels
        self.train_size: int = self.sizes["train"]
        self.test_size: int = self.sizes["test"]
        self.input_size: int = input_size
        self.device = torch.device(device)

    def __repr__(self) -> str:
        shape = f"{self.in_channels}x{self.input_size}x{self.input_size}"
        return (
            f"{type(self).__name__}({self.name}: {self.train_size} train, "
            f"val {self.describe('val')}, {self.test_size} test, {self.num_classes} classes, "
            f"{shape})"
        )

    def describe(self, split: str) -> str:
        """What the images of ``split`` are, for summaries: "10000 held-out training images"."""
        n = self.sizes[split]
        if split == "val":
            return f"{n} held-out training images" if self.held_out else f"{n} test images"
        return f"{n} {split} images"

    def steps_per_epoch(self, batch_size: int, replicas: int = 1) -> int:
        """Full training batches per epoch (the last partial batch is dropped).

        With ``replicas`` data-parallel tower pairs a step takes ``batch_size`` images on each.
        """
        return self.train_size // (batch_size * replicas)

    def full_batches(self, batch_size: int, replicas: int = 1) -> int:
        """:meth:`steps_per_epoch`, or DataError when the data make not even one batch."""
        steps = self.steps_per_epoch(batch_size, replicas)
        if steps == 0:
            raise DataError(
                f"{self.name}: {self.train_size} training images make no full batch of "
                f"{batch_size * replicas}; lower train.batch_size or use more images"
            )
        return steps

    def train_batches(
        self, epoch: int, batch_size: int, seed: int, start: int = 0, shard: tuple = (0, 1)
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x (B, C, S, S) float32, y (B,) int64) on the device, from batch ``start`` on.

        ``shard=(i, k)``: replica i of k data-parallel replicas gets rows ``[i*B, (i+1)*B)`` of
        each global batch of ``k*B`` images, so the replicas' shards are disjoint and together
        are the batch one replica would see at ``k*B``. Both towers of a pair pass the same
        shard and so get the same images and augmentation.
        """
        index, count = shard
        steps = self.full_batches(batch_size, count)
        order = torch.randperm(self.train_size, generator=generator(STREAM_ORDER, seed, epoch))
        size = batch_size * count
        chunks = (
            (i, order[i * size : (i + 1) * size][index * batch_size : (index + 1) * batch_size])
            for i in range(start, steps)
        )

        def fetch(item):  # on a loader thread: the batch's generator starts there
            i, idx = item
            parts = (seed, epoch, i) if count == 1 else (seed, epoch, i, index)
            gen = generator(STREAM_AUGMENT, *parts)
            return gen, self._fetch_train(idx, gen)

        for gen, (x, y) in ahead(fetch, chunks, self.workers):
            yield self._augment(x, gen, epoch), y

    def eval_batches(
        self, batch_size: int, ten_view: bool = False, shard: tuple = (0, 1), split: str = "test"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``split`` ("val" or "test") in order: (x (B, C, S, S), y), or
        (views (10, B, C, S, S), y).

        ``shard=(i, k)``: replica i of k takes every k-th batch, starting at batch i.
        """
        index, count, n = *shard, self.sizes[split]
        starts = range(index * batch_size, n, batch_size * count)
        chunks = (torch.arange(lo, min(lo + batch_size, n)) for lo in starts)
        for x, y in ahead(lambda idx: self._fetch(split, idx), chunks, self.workers):
            yield self._views(x, ten_view), y

    def _fetch_train(self, idx: torch.Tensor, gen: torch.Generator):
        """A training batch's stored images and labels (``gen``: its augmentation's draws)."""
        return self._fetch("train", idx)

    @abstractmethod
    def _fetch(self, split: str, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images ``idx`` of ``split`` ("train", "val" or "test") on the device, labels."""

    @abstractmethod
    def _augment(self, x: torch.Tensor, gen: torch.Generator, epoch: int = 0) -> torch.Tensor:
        """The training view of fetched images in ``epoch``, its randomness drawn from ``gen``."""

    @abstractmethod
    def _views(self, x: torch.Tensor, ten_view: bool) -> torch.Tensor:
        """The centre view of fetched test images, or their 10 views (10, B, C, S, S)."""

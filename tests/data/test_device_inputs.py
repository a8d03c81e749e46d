"""The training step's inputs are made on the training device, and the host never waits for it.

Every batch the trainer takes (images, labels; crops, flips and colour noise applied) is
computed on the device; the host draws the random numbers (so batches are the same on every
device and rank) and sends each batch's draws in a few non-blocking copies; nothing is read
back. No GPU here: the "meta" device stands in for one (every kernel has a meta version, and
the host can never read a meta tensor). tests/devicetrace.py records each operation;
tests/test_gpu.py checks the same on CUDA, with pinned memory and sync-debug mode.
"""

import pytest
import torch
from devicetrace import DeviceTrace
from fakedata import make_fashion
from imagetree import make_tree

from alexnet2012.config import Config
from alexnet2012.data import build_data
from alexnet2012.data.prepare import prepare_main

# host-to-device copies per training batch: the indices or the images and labels, the crop
# offsets and flips (one copy for all three; none when the host cuts the crops), the colour noise
COPIES = {"synthetic": 2, "fashion_mnist": 2, "imagefolder": 3, "imagefolder:device": 4}


def _config(name: str, tmp_path) -> Config:
    cfg = Config()
    d = cfg.data
    name, d.crop_on = (name + ":host").split(":")[:2]  # "imagefolder:device": cut there
    d.name, d.flip = name, True
    if name == "fashion_mnist":
        d.root, d.resize = str(make_fashion(tmp_path / "fm")), 36  # resize, crop and flip
    elif name == "imagefolder":
        prepare_main(str(make_tree(tmp_path / "src")), str(tmp_path / "dst"), size=32, workers=0)
        d.root, d.colour_noise = str(tmp_path / "dst"), "code"
    else:
        d.synthetic_size = 64
    return cfg


@pytest.mark.parametrize("name", list(COPIES))
def test_training_batches_are_made_on_the_device(name, tmp_path):
    cfg = _config(name, tmp_path)
    data = build_data(cfg, 28, "meta")
    data.workers = 0  # the trace sees this thread only; the reads are the same
    batches = data.train_batches(0, 4, cfg.seed)
    next(batches)  # one-off work of the first batch is not what is checked
    with DeviceTrace("meta") as trace:
        x, y = next(batches)
    assert x.device.type == y.device.type == "meta" and x.shape == (4, data.in_channels, 28, 28)
    assert trace.problems() == []
    assert len(trace.copies) == COPIES[name], trace.copies


def test_the_trace_sees_a_host_sync():
    """The checks above would catch the old ways: indices copied without non_blocking, a host
    tensor mixed into device work, a value read back."""
    with DeviceTrace("meta") as trace:
        x = torch.zeros(4, 3, device="meta")
        idx = torch.arange(2).to("meta")  # blocking
        x[torch.arange(2)]  # a host index into a device tensor: an implicit copy
        with pytest.raises(NotImplementedError):  # a read back (meta has nothing to read)
            x.to("cpu")
    problems = trace.problems()
    assert len(problems) == 3 and idx.device.type == "meta", problems

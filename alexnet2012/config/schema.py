"""The run configuration's schema: typed sections with their defaults, in one place.

Each field's comment says what it does and cites the source of its default; a field made with
:func:`choice` accepts only the listed values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
CROSSABLE = LAYERS[1:]  # conv1 reads the image, which both towers receive whole ([P] §3.5)
PAPER_CROSS = ("conv3", "fc6", "fc7", "fc8")  # the layers that read both towers: [P] §3.5, ref §1
DATA_NAMES = ("fashion_mnist", "imagefolder", "synthetic")  # data.name: data/sources.py's sets


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message names the key."""


# model.init per net: the 2012 net takes its preset's stds (ref §1) or He init; for the baselines
# "preset" means their own default (PyTorch's init, what d2l 1.0 ends up with; ref §5)
ALEXNET2012_INITS = ("preset", "kaiming")


def init_for(name: str, init: str) -> str:
    """The initialisation net ``name`` gets for ``model.init=init``: the one place of this rule.

    The 2012 net takes only :data:`ALEXNET2012_INITS`; another init is a :class:`ConfigError`.
    """
    if name == "alexnet2012":
        if init not in ALEXNET2012_INITS:
            raise ConfigError(
                f"model.init: {init!r} is for the baselines; alexnet2012 takes "
                f"{' or '.join(ALEXNET2012_INITS)}"
            )
        return init
    return "default" if init == "preset" else init


def choice(default, *choices):
    return field(default=default, metadata={"choices": choices})


@dataclass
class RunConfig:
    dir: str = ""  # empty: runs/<model>-<time> (torchrun --max-restarts needs one)
    name: str = ""
    # a checkpoint whose weights this run starts from (train --from: a variant of that run)
    start_from: str = ""


@dataclass
class ModelConfig:
    name: str = choice("alexnet2012", "alexnet2012", "streamlined", "torchvision")
    preset: str = choice("original", "original", "paper", "caffe")
    # total widths of conv1..conv5, fc6, fc7 (both towers); empty = the model's full size
    widths: list[int] = field(default_factory=list)
    input_size: int = 0  # 0 = the preset's (224, caffe 227)
    # the layers that take input from both towers; default the paper's (ref §1)
    cross: list[str] = field(default_factory=lambda: list(PAPER_CROSS))
    half: bool = False  # the one-column net of the paper's ablation (ref §1.4)
    lrn: bool = True  # response normalisation (LRN, and the 2012 code's spatial norm)
    overlap_pool: bool = True  # 3/2 pooling ([P] §3.4); false = 2/2
    dropout: str = choice("paper", "paper", "inverted", "none")
    # preset: the preset's stds (ref §1); kaiming: sqrt(2/fan_in); default/xavier: d2l's choices
    init: str = choice("preset", "preset", "kaiming", "default", "xavier")


@dataclass
class DataConfig:
    name: str = choice("fashion_mnist", *DATA_NAMES)
    root: str = ""  # fashion_mnist: folder of IDX files; imagefolder: a prepared store
    train_subset: int = 0  # use the first N training images (0 = all)
    test_subset: int = 0  # evaluate on the first N test images (0 = all)
    # training images set aside (fixed, seeded) as the validation set for val/ metrics and the
    # plateau schedule; 0 = validate on the test split (ILSVRC: its val set, as [P] reports)
    val_size: int = 0
    val_subset: int = 0  # validate during training on the first N validation images (0 = all)
    # input scale (ref §3): c12 = 0-255 minus the training mean image ([C12] convdata.py);
    # standard = mean 0, std 1; unit = [0, 1] ([D2L]); auto = the recipe's, see pixel_scale()
    pixels: str = choice("auto", "auto", "c12", "standard", "unit")
    resize: int = 0  # size before the random crop (0 = input size, no crop)
    flip: bool = True
    colour_noise: str = choice("code", "none", "paper", "code")  # ref §1.3, §3
    pca: str = choice("imagenet", "imagenet", "data")  # colour-noise constants
    colour_noise_epochs: int = 0  # colour noise off from this epoch on (0 = never off; ref §2)
    ten_view: bool = False  # also evaluate the 10 views (ref §3)
    # imagefolder: where training crops and flips are cut. host: into uint8 on the CPU, so only
    # the crops cross to the device; device: the whole stored image is copied and cut there
    crop_on: str = choice("host", "host", "device")
    workers: int = 2  # imagefolder: threads that read (and crop) batches ahead of the step
    # imagefolder: the store the run expects, raw arrays or JPEGs (prepare --format); any: either
    images: str = choice("any", "any", "raw", "jpeg")
    # a JPEG store: decode in batches on the device (nvJPEG), or on the loader threads; auto:
    # the device when it is a GPU. Decoded on the device, crops are cut there too
    decode_on: str = choice("auto", "auto", "host", "device")
    synthetic_size: int = 512  # images in the synthetic set


@dataclass
class TrainConfig:
    batch_size: int = 128
    epochs: int = 10
    max_steps: int = 0  # stop after this many steps (0 = no limit)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    bias_lr_mult: float = 2.0  # [C12] fresh configs; the paper text is 1
    bias_decay: bool = False  # [C12]: biases get no weight decay
    update: str = choice("pytorch", "pytorch", "paper")  # where lr enters the velocity (ref §2)
    # plateau: [P] §5's lr / 10 on a validation plateau; c12: the 2012 code's epoch table
    # (ref §2); constant: [D2L]
    schedule: str = choice("plateau", "plateau", "constant", "c12")
    plateau_patience: int = 0  # epochs without improvement before lr /= 10
    max_drops: int = 3  # [P] §5: three times
    log_every: int = 10
    eval_every: int = 0  # steps between validations inside an epoch (0 = at epoch ends only)
    checkpoint_every: int = 0  # steps; 0 = at each epoch end only
    amp: bool = False  # bf16 autocast
    # how a layer that reads its own tower only (conv2, conv4, conv5 in one process) runs: one
    # grouped convolution, or one convolution per tower concatenated (the same arithmetic; which
    # is faster is the library's business: bench measures both)
    grouped: str = choice("native", "native", "per_tower")
    channels_last: bool = False
    compile: bool = False
    device: str = choice("auto", "auto", "cpu", "cuda")


@dataclass
class ParallelConfig:
    fc8: str = choice("rank0", "rank0", "split")  # rank0: as [C12]; split: partial logits summed
    timeout_s: int = 60  # a dead or hung peer ends the job after this long
    # what saves, the first compiled steps and resume agreement may take (never below timeout_s)
    slow_timeout_s: int = 1800
    overlap: bool = False  # compute a cross layer's own-tower part while the exchange runs


@dataclass
class WandbConfig:
    mode: str = choice("auto", "auto", "online", "offline", "disabled")
    project: str = "alexnet2012"
    entity: str = ""
    group: str = ""
    job_type: str = ""
    init_timeout_s: int = 30  # an online start waits this long for the server, then logs offline


@dataclass
class Config:
    seed: int = 0
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


def pixel_scale(cfg: Config) -> str:
    """The input scale ``data.pixels`` stands for, ``auto`` resolved by recipe (ref §3, §5).

    - the 2012 net with its preset init: ``c12``, 0-255 pixels minus the training mean image,
      the scale its init stds and biases of 1 were set for ([C12] convdata.py; Caffe's
      bvlc_alexnet subtracts its mean image from 0-255 pixels as well);
    - the 2012 net with He init: ``standard``, the unit-variance inputs He init assumes;
    - the streamlined net: ``unit``, d2l's [0, 1] pixels ([D2L]);
    - torchvision's alexnet: ``standard``, its references' per-channel normalisation.
    """
    if cfg.data.pixels != "auto":
        return cfg.data.pixels
    m = cfg.model
    if m.name == "alexnet2012":
        return "c12" if init_for(m.name, m.init) == "preset" else "standard"
    return "unit" if m.name == "streamlined" else "standard"

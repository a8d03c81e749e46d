"""How long planned runs will take on one GPU, from images/s measured there, before they start.

    python -m alexnet2012.report.estimate --budget-min 12 \\
        "configs/fashion_mnist_2012.yaml seed=1" "configs/fashion_mnist_d2l_xavier.yaml seed=1"
    python -m alexnet2012.report.estimate --rate alexnet2012=3000 "configs/fashion_mnist_2012.yaml"

Each argument is one run: a config file and its ``key=value`` overrides, as ``train`` takes them
(so every config is loaded and checked here). A run's time is a start-up (process, data) plus its
training images at the rate its net trained, validations included, in the measured 10-epoch
runs of :data:`MEASURED`. ``--rate NET=IMG_S`` puts another GPU's training images/s in (from
``alexnet2012 bench`` or a run's ``summary.json``); validation keeps its measured share of the
time, start-up its measured seconds. Nets of other widths or input sizes than full size are
named: the full-size rate overstates their time.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, replace

from alexnet2012.config import Config, load_config
from alexnet2012.data.shape import data_shape
from alexnet2012.nets.model import FULL_WIDTHS


@dataclass(frozen=True)
class Measured:
    """One measured full-size run: training images/s in the steps, the run's wall time from its
    summary (training and validation), the process's whole time, and the images it trained."""

    train_img_s: float
    wall_s: float
    process_s: float
    images: int

    @property
    def start_s(self) -> float:  # the process's time outside wall_s: start-up, data loading
        return self.process_s - self.wall_s

    @property
    def img_s_with_validation(self) -> float:
        return self.images / self.wall_s

    def seconds(self, images: int) -> float:
        return self.start_s + images * self.wall_s / self.images

    def at_rate(self, img_s: float) -> Measured:
        """The same run at another training rate: validation keeps its share of the wall time,
        start-up its seconds."""
        train_s = self.images / self.train_img_s
        wall = self.wall_s * (self.images / img_s) / train_s
        return replace(self, train_img_s=img_s, wall_s=wall,
                       process_s=self.start_s + wall)  # fmt: skip


# One H200, 2026-12-04, torch 2.11.0+cu130, Fashion-MNIST at 224, batch 128, 10 epochs (3,900
# steps, 499,200 images), each run's summary.json (images_per_s, wall_s) and the whole process's
# time in the log (kept with the project's measurements: README.md, log-1.txt, log-2.txt;
# BENCHMARKS.md "The first run on a GPU"). The project at 796364c, before the response norms were
# fused: a later, faster two-tower step makes these figures an upper bound (--rate updates them).
MACHINE = "one NVIDIA H200 (measured 2026-12-04, torch 2.11, Fashion-MNIST at 224, batch 128)"
MEASURED = {
    # configs/fashion_mnist_2012.yaml, two towers emulated in one process: 5,394 img/s, 111.9 s
    # wall, 122 s process; the one-column half net is timed as this (fewer FLOPs: an upper bound)
    ("alexnet2012", False): Measured(5394.3, 111.9, 122, 499_200),
    ("alexnet2012", True): Measured(5126.0, 116.9, 125, 499_200),  # the same, train.amp=true
    # configs/fashion_mnist_d2l.yaml: 16,498 img/s, 38.8 s wall, 48 s process (xavier: 49 s)
    ("streamlined", False): Measured(16497.8, 38.8, 48, 499_200),
}
COMPARE_S = 5  # `alexnet2012 compare` over two runs (log-1.txt)


def training_images(cfg: Config) -> int:
    """Images a run trains on: full batches per epoch times epochs, or ``train.max_steps``."""
    t, (_, _, n) = cfg.train, data_shape(cfg)
    steps = max(n // t.batch_size, 1) * t.epochs
    if t.max_steps:
        steps = min(steps, t.max_steps)
    return steps * t.batch_size


def full_size(cfg: Config) -> bool:
    m = cfg.model
    return (not m.widths or list(m.widths) == list(FULL_WIDTHS)) and m.input_size in (0, 224)


def run_seconds(cfg: Config, rates: dict) -> tuple[float, str]:
    """Estimated seconds of one run and a note on what the figure assumes."""
    if cfg.data.name == "imagefolder":
        raise ValueError("no measured rate for imagefolder data (measured: Fashion-MNIST at 224)")
    key = (cfg.model.name, bool(cfg.train.amp))
    if key not in rates:
        key = (cfg.model.name, False)
    if key not in rates:
        raise ValueError(f"no measured rate for model.name={cfg.model.name}")
    images = training_images(cfg)
    note = f"{images:,} images at {rates[key].img_s_with_validation:,.0f} img/s"
    note += f" with validation, {rates[key].start_s:.0f} s start"
    if not full_size(cfg):
        note += "; smaller than full size, so the full-size rate overstates it"
    return rates[key].seconds(images), note


def parse_rates(pairs: list[str]) -> dict:
    """``NET=IMG_S`` (or ``NET/amp=IMG_S``) settings applied to :data:`MEASURED`."""
    rates = dict(MEASURED)
    for pair in pairs:
        name, _, value = pair.partition("=")
        net, _, amp = name.partition("/")
        key = (net, amp == "amp")
        base = rates.get(key) or rates.get((net, False))
        if base is None or not value:
            raise ValueError(f"--rate {pair}: give NET=IMG_S with NET one of alexnet2012, "
                             "streamlined (NET/amp for bf16)")  # fmt: skip
        rates[key] = base.at_rate(float(value))
    return rates


def estimate(runs: list[str], rates: dict, budget_s: float = 0.0, compares: int = 1) -> str:
    """The printed estimate of ``runs`` (each ``"CONFIG key=value ..."``)."""
    lines, total = [f"estimate on {MACHINE}:"], compares * COMPARE_S
    for spec in runs:
        path, *overrides = shlex.split(spec)
        cfg = load_config(path, overrides)
        seconds, note = run_seconds(cfg, rates)
        total += seconds
        name = cfg.run.dir or path
        lines.append(f"  {name}: {seconds:.0f} s ({path}; {note})")
    verdict = ""
    if budget_s:
        word = "within" if total <= budget_s else "OVER"
        verdict = f": {word} the budget of {budget_s / 60:.0f} min"
    lines.append(f"estimate: {len(runs)} runs and {compares} report(s), {total:,.0f} s "
                 f"({total / 60:.1f} min){verdict}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m alexnet2012.report.estimate",
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument("runs", nargs="+", metavar="'CONFIG [key=value ...]'")
    p.add_argument("--budget-min", type=float, default=0.0, help="say whether the runs fit")
    p.add_argument("--rate", action="append", default=[], metavar="NET=IMG_S",
                   help="training images/s of your GPU (alexnet2012, streamlined)")  # fmt: skip
    p.add_argument("--compares", type=int, default=1, help="compare calls to allow for")
    args = p.parse_args(argv)
    try:
        rates = parse_rates(args.rate)
        print(estimate(args.runs, rates, 60 * args.budget_min, args.compares))
    except (ValueError, OSError) as e:  # ConfigError is a ValueError
        print(f"estimate: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

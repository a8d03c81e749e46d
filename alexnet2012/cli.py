"""Command line: ``alexnet2012 <command> ...`` (also ``python -m alexnet2012``).

    alexnet2012 train --config configs/debug.yaml train.max_steps=20 seed=7 run.dir=runs/dbg
    alexnet2012 train --resume runs/dbg train.max_steps=40
    torchrun --standalone --nproc_per_node=2 -m alexnet2012 train --config configs/debug.yaml
    alexnet2012 summary --config configs/imagenet_2012.yaml
    alexnet2012 prepare /data/ILSVRC2012 /data/ilsvrc2012-256

A problem the user can fix (a config key, a data folder, a checkpoint) prints one message and
exits with status 2; nothing already saved is touched.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys

from alexnet2012.files import DiskFullError, stdout_reader_gone

USER_ERRORS = (ValueError, OSError)  # bad values, files and paths: one line, exit 2
EXIT_USER_ERROR = 2
EXIT_DISK_FULL = 3  # a write found no space; what was saved before is intact
RAW = argparse.RawDescriptionHelpFormatter  # examples keep their own lines
TRAIN_HELP = """Train a run: an epoch, a validation, a checkpoint; repeat.

    alexnet2012 train --config configs/debug.yaml train.max_steps=20 run.dir=runs/dbg
    torchrun --standalone --nproc_per_node=2 -m alexnet2012 train --config configs/debug.yaml
    alexnet2012 train --resume runs/dbg train.max_steps=40
    alexnet2012 train --from runs/dbg/checkpoints/ckpt-00000040.pt run.dir=runs/dbg-b64 \\
        train.batch_size=64

A resume continues the run as it was computed: it may lengthen train.max_steps or
train.epochs, lower train.lr, change logging, checkpointing, W&B, the device and evaluation
extras, and refuses anything else (batch size, seed, data, schedule, model, run.dir). A variant
is a new run: --from a checkpoint, in a new run.dir, with the changed keys.

Exit status: 0 done, 2 bad input (nothing started, nothing saved is touched), 3 disk full (what
was saved is intact), 1 stopped (a non-finite loss, a lost peer), 130 stopped by a signal after
saving; docs/failures.md has each message.
"""
PREPARE_HELP = """Decode an image set once (shorter side to --size, centre square crop) into a store
that training reads fast, with its mean image and RGB PCA (ref §3). It reads ILSVRC-2012 as
distributed (the three official files in one folder, read in place), their extracted layout,
Kaggle's CLS-LOC download, or ImageFolder trees, and says which it found.

    alexnet2012 prepare /data/ilsvrc2012-download /data/ilsvrc2012-256 --workers 16
    alexnet2012 prepare /data/imagenet /data/ilsvrc2012-256 --on-bad stop
    alexnet2012 prepare /data/ilsvrc2012-download /data/ilsvrc2012-jpeg --format jpeg  # ~31 GB
"""
SUMMARY_HELP = """Per-layer output shapes, parameters and multiply-adds of the configured network,
per tower and in total; with --init, its health at initialisation on a real batch.

    alexnet2012 summary --config configs/imagenet_2012.yaml
    alexnet2012 summary --init --config configs/fashion_mnist_2012.yaml
"""


def _config(args):
    from alexnet2012.config import ConfigError, load_config

    if getattr(args, "start_from", None):
        from alexnet2012.training.contract import variant_config

        if args.config or args.resume:
            raise ConfigError("--from starts from the checkpoint's config: no --config, --resume")
        return variant_config(args.start_from, args.overrides)
    if getattr(args, "resume", None):
        from alexnet2012.training.contract import resume_config

        if args.config:
            raise ConfigError("give either --config or --resume, not both")
        return resume_config(args.resume, args.overrides)
    return load_config(args.config, args.overrides)


def cmd_train(args) -> int:
    from alexnet2012.training import loop
    from alexnet2012.training.run import start_policy

    cfg = _config(args)
    summary = loop.run(cfg, resume=start_policy(cfg, bool(args.resume)), replace=args.replace)
    if _rank() == 0:
        keys = ("test/top1_err", "test/top5_err", "test/loss", "images_per_s", "wall_s")
        print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=1))
    return 0


def _at_least(low: int):
    """An argparse type: a whole number >= ``low`` (argparse prints one error line, exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def cmd_summary(args) -> int:
    from alexnet2012.data.shape import data_shape
    from alexnet2012.nets.build import build_model, input_size
    from alexnet2012.nets.summary import format_table, layer_table

    cfg = _config(args)
    if args.init:
        from alexnet2012.training.inithealth import format_report, init_report

        print(format_report(cfg, init_report(cfg, args.batch)))
        return 0
    classes, channels, _ = data_shape(cfg)
    classes = args.classes or classes
    channels = args.channels or channels
    model = build_model(cfg, classes, channels)
    size = input_size(cfg)
    preset = f" (preset {cfg.model.preset})" if cfg.model.name == "alexnet2012" else ""
    print(f"{cfg.model.name}{preset}, input {channels}x{size}x{size}, {classes} classes")
    print(format_table(layer_table(model, channels, size)))
    return 0


def cmd_prepare(args) -> int:
    from alexnet2012.data.prepare import prepare_main

    opts = dict(size=args.size, on_bad=args.on_bad, workers=args.workers, quality=args.quality)
    summary = prepare_main(args.src, args.dst, images=args.format, **opts)
    print(json.dumps(summary, indent=1, default=str))
    return 0


# commands that live in their own modules: (name, module, help); each module has
# add_arguments(parser) and main(args) -> int
PLUGINS = [
    ("bench", "alexnet2012.bench.command", "time training steps and the input pipeline"),
    ("compare", "alexnet2012.report.compare", "compare run folders: table and plots"),
    ("kernels", "alexnet2012.report.kernels", "first-layer kernels per tower, colour scores"),
    ("neighbours", "alexnet2012.report.neighbours", "nearest training images in fc7 space"),
    ("convert", "alexnet2012.weights.convert", "import Caffe or torchvision AlexNet weights"),
]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command`` given, only that plugin module is imported (fast start)."""
    p = argparse.ArgumentParser(prog="alexnet2012", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train a model (plain, or under torchrun for two towers)",
        description=TRAIN_HELP,
        formatter_class=RAW,
    )
    t.add_argument("--config", help="YAML file of overrides (configs/*.yaml)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    t.add_argument(
        "--from",
        dest="start_from",
        metavar="CKPT",
        help="start a new run (in a new run.dir) from this checkpoint's weights and config, "
        "with key=value changes: a variant of that run",
    )
    t.add_argument(
        "--replace",
        action="store_true",
        help="start afresh in a run.dir where an earlier run stopped before its first "
        "checkpoint (its files are moved into a replaced-<time> folder there)",
    )
    t.add_argument("overrides", nargs="*", help="key=value, e.g. train.epochs=3 seed=1")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser(
        "summary",
        help="per-layer shapes, parameters and multiply-adds",
        description=SUMMARY_HELP,
        formatter_class=RAW,
    )
    s.add_argument("--config")
    s.add_argument(
        "--classes", type=_at_least(0), default=0, help="default: 10 for Fashion-MNIST, else 1000"
    )
    s.add_argument(
        "--channels", type=_at_least(0), default=0, help="default: 1 for Fashion-MNIST, else 3"
    )
    s.add_argument(
        "--init",
        action="store_true",
        help="health at initialisation on a real batch of the configured data: per-layer "
        "activations, gradients, first-step updates and the logits' spread, fp32 and bf16",
    )
    s.add_argument("--batch", type=_at_least(2), default=64, help="images for --init")
    s.add_argument("overrides", nargs="*")
    s.set_defaults(fn=cmd_summary, resume=None)

    r = sub.add_parser(
        "prepare",
        help="decode ILSVRC-2012 or an image tree once into a fast store (ref §3)",
        description=PREPARE_HELP,
        formatter_class=RAW,
    )
    r.add_argument(
        "src",
        help="folder holding ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and "
        "ILSVRC2012_devkit_t12.tar.gz (read in place, nothing extracted), or their extracted "
        "layout, or Kaggle's CLS-LOC download, or train/ and val/ ImageFolder trees",
    )
    r.add_argument("dst", help="output folder; the same command again finishes an interrupted run")
    r.add_argument("--size", type=_at_least(32), default=256, help="stored side in pixels")
    r.add_argument("--on-bad", choices=("skip", "stop"), default="skip")
    r.add_argument(
        "--workers",
        type=_at_least(0),
        default=None,
        metavar="N",
        help="decoding processes (default: the cores available; 0 or 1: in this process)",
    )
    jpeg = "raw: uint8 arrays (196 KB an image); jpeg: the same squares as JPEGs (~24 KB)"
    r.add_argument("--format", choices=("raw", "jpeg"), default="raw", help=jpeg)
    r.add_argument("--quality", type=_at_least(1), default=90, help="JPEG quality (--format jpeg)")
    r.set_defaults(fn=cmd_prepare)

    for name, module, text in PLUGINS:
        if command is not None and command != name:
            sub.add_parser(name, help=text, add_help=False).add_argument("rest", nargs="*")
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                continue  # not part of this installation
            raise
        c = sub.add_parser(name, help=text, description=mod.__doc__, formatter_class=RAW)
        mod.add_arguments(c)
        c.set_defaults(fn=mod.main)
    return p


def _rank() -> int:
    """This process's global rank as torchrun sets it (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and not argv[0].startswith("-") else None
    args = build_parser(command).parse_args(argv)
    rank = _rank()
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s" if "RANK" in os.environ
        else "%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )  # fmt: skip
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except DiskFullError as e:
        print(f"alexnet2012 {args.command}: {e}", file=sys.stderr)
        return EXIT_DISK_FULL
    except USER_ERRORS as e:
        if isinstance(e, BrokenPipeError) and stdout_reader_gone():  # `| head`: a shell's status
            return 128 + signal.SIGPIPE
        print(f"alexnet2012 {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except RuntimeError as e:  # a run that stopped: a signal, a non-finite loss, a lost peer
        from alexnet2012.control.stopping import Interrupted
        from alexnet2012.control.torchrun import PeerError
        from alexnet2012.training.snapshot import TrainingError

        if not isinstance(e, Interrupted | TrainingError | PeerError):
            raise
        print(f"alexnet2012 {args.command}: {e}", file=sys.stderr)
        return 130 if isinstance(e, Interrupted) else 1


def run_and_exit(argv: list[str] | None = None) -> None:
    """:func:`main`, then leave the process with its status.

    A torchrun worker (``RANK`` set) has torn its process group down and flushed everything by
    then; it leaves without the interpreter's teardown, where gloo's background threads can
    still be unwinding and abort a cleanly finished process (SIGABRT, "terminate called without
    an active exception"), most often when all ranks stop on the same error at once.
    """
    code = main(argv)
    if "RANK" in os.environ:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)

"""Benchmarks: training-step throughput of each execution, and what each input pipeline delivers.

    alexnet2012 bench --config configs/debug.yaml data.name=synthetic --steps 10 --warmup 3
    alexnet2012 bench train.batch_size=128 --executions emulated,streamlined --flops --json b.json
    alexnet2012 bench --config configs/debug.yaml --fc8 both --json runs/bench/debug.json
    alexnet2012 bench data --config configs/debug.yaml --steps 20

Training bench: each execution runs in fresh processes (peaks do not mix) on fixed random batches
of the configured batch and input size already on the device. ``two_ranks`` holds one tower per
process (gloo on CPU, each rank half the cores; NCCL with one GPU each), ``emulated`` runs the
same two-tower network in one process, ``streamlined`` (d2l) and ``torchvision`` are the
baselines at the same size. Bytes per exchange point come from the run's counters (docs/
parallel.md, "Communication volume"); the exchange share is the part of the step the exchanges
held a rank up (host time in gloo's calls; on GPUs CUDA events on the compute stream, since NCCL
calls return once enqueued). ``--flops`` adds achieved TFLOP/s (training taken as 3x
the forward multiply-adds x 2) and, on CUDA, the share of ``--peak-tflops`` (default one H100:
790 with train.amp, else 67). GPU options come from the config: train.amp (bf16 autocast),
train.channels_last, train.compile. ``two_ranks`` needs two GPUs on CUDA (skipped on one).

``rank_share`` (asked for by name) runs one rank's share of the split net on one device, each
exchange a local copy of its size, and projects two devices from it (bench/project.py).
``bench data``: what each input pipeline delivers (DATA_HELP); ``bench norms``: bench/norms.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
from pathlib import Path

import torch

from alexnet2012 import config
from alexnet2012.bench import exchanges
from alexnet2012.bench import measure as benchlib
from alexnet2012.bench import rows as benchrows
from alexnet2012.bench.measure import DEFAULT_EXECUTIONS, EXECUTIONS, SPLIT, Job
from alexnet2012.bench.profile import format_profile
from alexnet2012.bench.project import format_projection, project
from alexnet2012.config import DATA_NAMES, Config, load_config
from alexnet2012.data.errors import DataError
from alexnet2012.data.shape import data_shape
from alexnet2012.nets.build import build_model
from alexnet2012.parallel.plan import rank_param_bytes, refusal

DATA_HELP = """Images/s each input pipeline delivers as training batches (Fashion-MNIST with the
train transforms, the synthetic set, and the prepared store that data.root names), next to the
images/s a short training bench of the configured model consumes; the target is a pipeline at
least 5x faster than training.

    alexnet2012 bench data --config configs/debug.yaml --steps 20
    alexnet2012 bench data --config configs/imagenet_2012.yaml data.root=/data/store --steps 50
"""
PEAK_TFLOPS = {"bf16": 790.0, "fp32": 67.0}  # one H100 here (docs/parallel.md anchors)
TARGET_RATIO = 5.0  # the pipeline should outrun the training step this many times


def add_arguments(p) -> None:
    """The ``bench`` command's options (cli.py's plugin interface).

    Overrides and options may be mixed in any order (``bench data --config F k=v --steps 3``):
    everything from the first positional word on is parsed again by :func:`main`.
    """
    _options(p)
    p.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        metavar="[data] key=value",
        help="'data' first benches the input pipelines, 'norms' the response norms; then "
        "overrides, e.g. train.amp=true",
    )


def _options(p) -> None:
    p.add_argument("--config", help="YAML file of overrides (configs/*.yaml)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (data: timed batches)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the clock starts")
    p.add_argument("--executions", default=",".join(DEFAULT_EXECUTIONS),
                   help=f"comma-separated, of {','.join(EXECUTIONS)}")  # fmt: skip
    where = ("config", "rank0", "split", "both")  # config: as parallel.fc8
    p.add_argument("--fc8", choices=where, default="config", help="where two_ranks keeps fc8")
    p.add_argument("--flops", action="store_true", help="report achieved TFLOP/s")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="one device's, for --flops")
    p.add_argument("--json", metavar="OUT", help="write the full report as JSON here")
    what = "two gloo ranks: time each exchange call (waiting, own cost, alone)"
    p.add_argument("--exchanges", action="store_true", help=what)
    what = "profile N more steps of each execution: the top operations by their own time"
    p.add_argument("--profile", type=int, default=0, metavar="N", help=what)


def _use_cuda(cfg: Config) -> bool:
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda, but CUDA is not available here; use train.device=cpu")
    return cfg.train.device != "cpu" and torch.cuda.is_available()


def _machine(cuda: bool) -> dict:
    gpu = torch.cuda.get_device_name(0) if cuda else None
    return {"device": "cuda" if cuda else "cpu", "gpu": gpu, "gpus": torch.cuda.device_count(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__}  # fmt: skip


def _split_refusal(cfg: Config, classes: int, channels: int) -> str | None:
    """The plan's reason the configured net cannot run on two ranks, or None (meta device)."""
    with torch.device("meta"):
        return refusal(build_model(benchlib.config_for(cfg, "two_ranks"), classes, channels))


def _refusal(name: str, cfg: Config, cuda: bool, split: str | None) -> str | None:
    """Why ``name`` cannot run here, or None (``split``: :func:`_split_refusal`'s answer)."""
    if name == "two_ranks" and cuda and torch.cuda.device_count() < 2:
        return ("two_ranks skipped: one GPU, and NCCL refuses two ranks on one GPU (docs/"
                "parallel.md); rerun with train.device=cpu for two gloo CPU ranks")  # fmt: skip
    if name in SPLIT and split:
        return f"{name} skipped: {split}"
    if name == "torchvision" and importlib.util.find_spec("torchvision") is None:
        return "torchvision skipped: the torchvision package is not installed"
    return None


def train_bench(cfg: Config, args, cuda: bool) -> dict:
    """Time every asked-for execution; the report (rows, ratios, notes)."""
    names = [n.strip() for n in args.executions.split(",") if n.strip()]
    if not names or set(names) - set(EXECUTIONS):
        raise ValueError(f"--executions {args.executions!r}: choose from {','.join(EXECUTIONS)}")
    classes, channels, epoch_images = data_shape(cfg)
    fc8s = {"config": [cfg.parallel.fc8], "both": ["rank0", "split"]}.get(args.fc8, [args.fc8])
    peak = args.peak_tflops or (PEAK_TFLOPS["bf16" if cfg.train.amp else "fp32"] if cuda else 0)
    split = _split_refusal(cfg, classes, channels)
    refusals = {n: _refusal(n, cfg, cuda, split) for n in names}
    rows, notes = [], [r for r in refusals.values() if r]
    runnable = [n for n in names if not refusals[n]]
    for name in runnable:
        with torch.device("meta"):  # a bad config fails here in one line, before any process
            build_model(benchlib.config_for(cfg, name, fc8s[0]), classes, channels)
    for name in runnable:
        for fc8 in fc8s if name in SPLIT else [None]:
            run_cfg = benchlib.config_for(cfg, name, fc8)
            label = f"{name}/{fc8}" if fc8 else name
            job = Job(label, name, config.to_dict(run_cfg), classes, channels, args.steps,
                      args.warmup, cuda, trace=args.exchanges, profile=args.profile)  # fmt: skip
            flops = None
            if args.flops:
                macs = benchrows.forward_macs(run_cfg, classes, channels)
                flops = {"macs": macs, "peak_tflops": peak or None}
            ranks = benchlib.run_job(job)
            rows.append(benchrows.summarise(job, ranks, epoch_images, flops))
            if ranks[0]["exchange_calls"]:
                rows[-1]["exchange_breakdown"] = exchanges.breakdown(ranks)
            elif args.exchanges and name == "two_ranks":
                notes.append(f"{label}: --exchanges times two gloo ranks without overlap only")
    plan, ran = {}, {r["fc8"] for r in rows if r["execution"] == "two_ranks"}
    if "two_ranks" in names and not split:
        for fc8 in sorted({"rank0", "split"} - ran):  # the placements not run: from the plan
            with torch.device("meta"):
                model = build_model(benchlib.config_for(cfg, "two_ranks", fc8), classes, channels)
            plan[fc8] = rank_param_bytes(model, fc8)
    return {
        "command": "bench", **_machine(cuda), "config": config.to_dict(cfg),
        "steps": args.steps, "warmup": args.warmup, "results": rows,
        "ratios": benchrows.ratios(rows, plan), "notes": notes,
        "projections": [project(r) for r in rows if r["execution"] == "rank_share"],
    }  # fmt: skip


def data_bench(cfg: Config, args, cuda: bool) -> dict:
    """Images/s of each input pipeline against the images/s the configured model trains on."""
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    wanted = [name for name in DATA_NAMES if name != "imagefolder"]  # the sets without a store
    if cfg.data.name == "imagefolder" and cfg.data.root:
        wanted.append("imagefolder")
    pipelines, notes = [], []
    for name in wanted:
        root = cfg.data.root if name == cfg.data.name else ""  # another pipeline's own default
        pcfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, name=name, root=root))
        try:
            pipelines.append(benchlib.pipeline_rate(pcfg, device, args.steps))
        except (DataError, FileNotFoundError, ImportError) as e:  # not on this machine
            notes.append(f"{name} skipped: {e}")
    execution = "emulated" if cfg.model.name == "alexnet2012" else cfg.model.name
    classes, channels, epoch_images = data_shape(cfg)
    run_cfg = config.to_dict(benchlib.config_for(cfg, execution))
    job = Job(execution, execution, run_cfg, classes, channels, args.steps, args.warmup, cuda)
    train = benchrows.summarise(job, benchlib.run_job(job), epoch_images, None)
    for p in pipelines:
        p["train_images_per_s"] = train["images_per_s"]
        p["ratio"] = p["images_per_s"] / train["images_per_s"]
        p["meets_target"] = p["ratio"] >= TARGET_RATIO
    return {
        "command": "bench data", **_machine(cuda), "config": config.to_dict(cfg),
        "steps": args.steps, "target_ratio": TARGET_RATIO, "pipelines": pipelines,
        "train": train, "notes": notes,
    }  # fmt: skip


def _print_train(report: dict) -> None:
    rows = report["results"]
    if rows:
        r = rows[0]
        print(f"{report['device']} {report['gpu'] or ''} torch {report['torch']}: batch "
              f"{r['batch_size']}, input {r['input_size']}, {r['steps']} steps after "
              f"{r['warmup']} warm-up")  # fmt: skip
        print(benchrows.format_table(rows))
        for r in rows:
            print(
                f"  {r['name']}: epoch of {r['epoch_images']} images {r['epoch_s']:.1f} s", end=""
            )
            points = r["bytes_per_step_by_point"]
            if points:
                each = ", ".join(f"{k} {max(v) / 1e6:.3f}" for k, v in points.items())
                print(f"; MB/step/rank {each}", end="")
            if "train_gflop_per_image" in r:
                print(f"; {r['train_gflop_per_image']:.2f} GFLOP/image", end="")
            print()
        for r in rows:
            if r["profile"]:
                print(format_profile(r["name"], r["profile"], report["device"] == "cuda"))
            if "exchange_breakdown" in r:
                print(f"{r['name']}: exchanges per call, medians over the timed steps")
                print(exchanges.format_breakdown(r["exchange_breakdown"]))
    for p in report["projections"]:
        print(format_projection(p))
    rat = report["ratios"]
    for fc8, v in rat["step_time_two_ranks_over_emulated"].items():
        print(f"two_ranks (fc8 {fc8}) / emulated step time: {v:.2f}")
    for fc8, v in rat["memory_larger_rank_over_one_process"].items():
        print(f"larger rank / one process, params + optimizer (fc8 {fc8}, {v['source']}): "
              f"{v['ratio']:.3f}")  # fmt: skip


def _print_data(report: dict) -> None:
    head = f"{'pipeline':<14} {'img/s':>10} {'train img/s':>12} {'ratio':>7}  target"
    print(head + "\n" + "-" * len(head))
    for p in report["pipelines"]:
        ok = "ok" if p["meets_target"] else f"below {report['target_ratio']:.0f}x"
        print(f"{p['pipeline']:<14} {p['images_per_s']:>10.0f} {p['train_images_per_s']:>12.1f} "
              f"{p['ratio']:>7.1f}  {ok}")  # fmt: skip
    t = report["train"]
    print(f"training: {t['name']} ({t['model']}), batch {t['batch_size']}, input "
          f"{t['input_size']}, {t['device']}")  # fmt: skip


def main(args) -> int:
    """Run the benchmark ``args`` asks for, print its table and write the JSON report."""
    data_first = args.args[:1] == ["data"]
    if args.args[:1] == ["norms"]:  # bench/norms.py, with this command's options and device
        from alexnet2012.bench import norms

        return norms.main(args, _options, _use_cuda, _machine)
    again = argparse.ArgumentParser(
        prog="alexnet2012 bench data" if data_first else "alexnet2012 bench",
        description=DATA_HELP if data_first else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # its --help: `bench data --help` describes the pipeline bench
    _options(again)
    again.add_argument("words", nargs="*")
    args = again.parse_intermixed_args(args.args, namespace=args)  # keeps options given before
    data_mode = args.words[:1] == ["data"]
    cfg = load_config(args.config, args.words[1:] if data_mode else args.words)
    if args.steps < 1 or args.warmup < 0 or args.profile < 0:
        raise ValueError(f"--steps must be >= 1, --warmup and --profile >= 0, got {args.steps}, "
                         f"{args.warmup}, {args.profile}")  # fmt: skip
    out = Path(args.json) if args.json else None
    if out is not None:  # a bad --json path fails now, not after the whole bench
        if out.is_dir():
            raise ValueError(f"--json {out}: is a folder; give a file name")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"--json {out}: cannot write there ({e.strerror})") from None
    cuda = _use_cuda(cfg)
    report = data_bench(cfg, args, cuda) if data_mode else train_bench(cfg, args, cuda)
    (_print_data if data_mode else _print_train)(report)
    for note in report["notes"]:
        print(f"note: {note}")
    if out is not None:
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {out}")
    return 0

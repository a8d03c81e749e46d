"""``alexnet2012 bench norms``: each response norm's forward + backward, fused against the
formulas it replaced (autograd through shifted squares and pooling), at the configured net's
own shapes, batch, device, autocast and memory layout.

    alexnet2012 bench norms model.input_size=224 train.batch_size=32
    alexnet2012 bench norms --config configs/fashion_mnist_2012.yaml train.device=cuda \\
        train.amp=true train.channels_last=true train.batch_size=256
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from alexnet2012.config import Config, load_config
from alexnet2012.data.shape import data_shape
from alexnet2012.nets.build import build_model
from alexnet2012.nets.layers import CrossLRN, SpatialNorm, TowerLRN
from alexnet2012.nets.norms import CHANNEL, SPATIAL, response_norm, response_norm_formula
from alexnet2012.training.step import autocast


def norm_inputs(cfg: Config, classes: int, channels: int) -> list[tuple[str, object, tuple]]:
    """(layer name, norm module, input shape at the configured batch) of every response norm
    of the configured net, found by running it on the meta device."""
    with torch.device("meta"):
        model = build_model(cfg, classes, channels).eval()  # no dropout masks on meta
        found = []
        for name, m in model.named_modules():
            if isinstance(m, (TowerLRN, CrossLRN, SpatialNorm)):
                m.register_forward_hook(
                    lambda mod, args, _out, name=name: found.append((name, mod, args[0].shape))
                )
        size, n = model.input_size, cfg.train.batch_size
        model(torch.empty(n, channels, size, size))
    return found


def _norm_args(m) -> tuple:
    if isinstance(m, SpatialNorm):
        return SPATIAL, 1, m.size, m.scale, m.beta, m.k
    groups = m.towers if isinstance(m, TowerLRN) else 1
    return CHANNEL, groups, m.size, m.alpha, m.beta, m.k


def _time(fn, x, g, repeats: int, cfg: Config) -> float:
    """Median seconds of forward + backward of ``fn`` on ``x`` with output gradient ``g``,
    under the configured autocast."""
    device = x.device

    def once():
        a = x.detach().requires_grad_()
        with autocast(cfg, device):
            out = fn(a)
        out.backward(g.to(out.dtype))

    once()  # first call: compiles the kernels, fills caches
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        once()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def norms_bench(cfg: Config, classes: int, channels: int, device, repeats: int) -> dict:
    """Forward + backward milliseconds of each norm, fused and formula, and the ratio."""
    amp = cfg.train.amp and device.type == "cuda"
    dtype = torch.bfloat16 if amp else torch.float32  # a conv's output under autocast
    rows, g = [], torch.Generator().manual_seed(0)
    for name, m, shape in norm_inputs(cfg, classes, channels):
        x = (torch.randn(shape, generator=g) * 80).to(device=device, dtype=dtype)
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        grad = torch.randn(x.shape, generator=g).to(device)
        args = _norm_args(m)
        fused = _time(lambda a, args=args: response_norm(a, *args), x, grad, repeats, cfg)
        formula = _time(lambda a, args=args: _formula(a, *args), x, grad, repeats, cfg)
        rows.append({"layer": name, "norm": type(m).__name__, "shape": list(shape),
                     "fused_ms": fused * 1e3, "formula_ms": formula * 1e3,
                     "speedup": formula / fused})  # fmt: skip
    return {"command": "bench norms", "device": str(device), "dtype": str(dtype)[6:],
            "channels_last": cfg.train.channels_last, "repeats": repeats, "norms": rows,
            "notes": []}  # fmt: skip


def _formula(x, *args):
    """The formulas as the layers computed them before: fp32 inside under autocast."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return response_norm_formula(x, *args)
    with torch.autocast(device, enabled=False):
        out = response_norm_formula(x.float(), *args)
    return out.to(torch.get_autocast_dtype(device))


def print_norms(report: dict) -> None:
    print(f"{report['device']}, {report['dtype']}, channels_last={report['channels_last']}, "
          f"median of {report['repeats']}: forward + backward, ms")  # fmt: skip
    head = f"{'layer':<26} {'norm':<12} {'input shape':<20} {'fused':>9} {'formula':>9} {'x':>6}"
    print(head + "\n" + "-" * len(head))
    for r in report["norms"]:
        shape = "x".join(str(s) for s in r["shape"])
        print(f"{r['layer']:<26} {r['norm']:<12} {shape:<20} {r['fused_ms']:>9.2f} "
              f"{r['formula_ms']:>9.2f} {r['speedup']:>6.2f}")  # fmt: skip
    fused = sum(r["fused_ms"] for r in report["norms"])
    formula = sum(r["formula_ms"] for r in report["norms"])
    print(f"{'all norms':<60} {fused:>9.2f} {formula:>9.2f} {formula / max(fused, 1e-9):>6.2f}")


def main(args, options, use_cuda, machine) -> int:
    """The command: ``options(parser)`` adds bench's options, ``use_cuda(cfg)`` decides the
    device, ``machine(cuda)`` describes it (bench/command.py's)."""
    raw = argparse.RawDescriptionHelpFormatter
    again = argparse.ArgumentParser(
        prog="alexnet2012 bench norms", description=__doc__, formatter_class=raw
    )
    options(again)
    again.add_argument("words", nargs="*")
    args = again.parse_intermixed_args(args.args[1:], namespace=args)
    cfg = load_config(args.config, args.words)
    cuda = use_cuda(cfg)
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    classes, channels, _ = data_shape(cfg)
    report = {**machine(cuda), **norms_bench(cfg, classes, channels, device, max(args.steps, 1))}
    print_norms(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0

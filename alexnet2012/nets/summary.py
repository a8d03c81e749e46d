"""Per-layer output shapes, parameters and multiply-adds, per tower and in total."""

from __future__ import annotations

import torch
from torch import nn

from alexnet2012.nets.model import AlexNet2012, Block


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    w = module.weight
    per_output = w[0].numel()  # (in / groups) * k * k for a conv, in / groups for a linear
    return out[0].numel() * per_output


@torch.no_grad()
def layer_table(model: nn.Module, in_channels: int, size: int) -> list[dict]:
    """One row per conv/linear layer: name, output shape (before pooling), params, MACs/image."""
    rows, hooks = [], []
    towers = model.towers if isinstance(model, AlexNet2012) else 1

    def record(name, module):
        def hook(mod, inputs, output=None):
            out = inputs[0] if isinstance(mod, nn.Sequential) else output
            n = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append({
                "layer": name,
                "shape": tuple(out.shape[1:]),
                "params": n,
                "macs": _macs(module, out),
                "towers": towers if isinstance(module, Block) and name != "fc8" else 1,
                "cross": bool(getattr(module, "cross", False)),
            })  # fmt: skip

        return hook

    if isinstance(model, AlexNet2012):
        for block in model.blocks():  # shape the layer computes, before the ops that follow it
            hooks.append(block.post.register_forward_pre_hook(record(block.name, block)))
    else:
        i = 0
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                i += 1
                name = f"conv{i}" if isinstance(m, nn.Conv2d) else f"fc{i}"
                hooks.append(m.register_forward_hook(record(name, m)))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, in_channels, size, size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return rows


def format_table(rows: list[dict]) -> str:
    cols = (("layer", "<6"), ("output", ">16"), ("per tower", ">16"), ("params", ">12"))
    head = " ".join(f"{n:{f}}" for n, f in cols) + f" {'per tower':>11} {'MACs':>14}"
    lines = [head, "-" * len(head)]
    for r in rows:
        t = r["towers"]
        shape = "x".join(map(str, r["shape"]))
        tower_shape = "x".join(map(str, (r["shape"][0] // t, *r["shape"][1:]))) if t > 1 else "-"
        tower_params = f"{r['params'] // t:,}" if t > 1 else "-"
        name = r["layer"] + ("*" if r["cross"] else "")
        lines.append(
            f"{name:<6} {shape:>16} {tower_shape:>16} {r['params']:>12,} {tower_params:>11} "
            f"{r['macs']:>14,}"
        )
    total_p = sum(r["params"] for r in rows)
    total_m = sum(r["macs"] for r in rows)
    lines.append("-" * len(head))
    lines.append(f"{'total':<6} {'':>16} {'':>16} {total_p:>12,} {'':>11} {total_m:>14,}")
    lines.append("* reads both towers; MACs are multiply-adds per image, forward")
    return "\n".join(lines)

"""Health of a configured net at initialisation, on a real training batch.

    alexnet2012 summary --init --config configs/fashion_mnist_2012.yaml
    alexnet2012 summary --init --config configs/fashion_mnist_2012.yaml data.pixels=standard

Per layer: the mean and std of its output, the norm of its weight gradient and the
update-to-weight ratio of the first optimiser step; for the logits, how much they vary across
images (the part that can tell images apart) against how large they are. Each in fp32 and
under bf16 autocast (what ``train.amp`` runs on a GPU; the CPU's bf16 rounds the same way), with
the bf16 logits' deviation from fp32 beside the spread it has to preserve. A net whose logits
barely depend on the image (ref §2's trap), or whose bf16 rounding swamps that dependence,
starts at chance.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from alexnet2012.config import Config, pixel_scale
from alexnet2012.data import build_data
from alexnet2012.nets.build import build_model, input_size
from alexnet2012.nets.layers import set_dropout_step
from alexnet2012.nets.model import AlexNet2012
from alexnet2012.training.optim import build_optimizer


def _layers(model: nn.Module) -> list[tuple[str, nn.Module, nn.Module]]:
    """(name, module whose output is recorded, module holding the weight), in order.

    The 2012 net: each block's output after the operations that follow it (ReLU, norms,
    pooling). A baseline: each conv/linear layer's output, before its ReLU.
    """
    if isinstance(model, AlexNet2012):
        return [(b.name, b, b) for b in model.blocks()]
    out, n_conv, n_fc = [], 0, 5
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            if isinstance(m, nn.Conv2d):
                n_conv += 1
                name = f"conv{n_conv}"
            else:
                n_fc += 1
                name = f"fc{n_fc}"
            out.append((name, m, m))
    return out


def _pass(model: nn.Module, cfg: Config, x, y, amp: bool) -> dict:
    """One forward, backward and optimiser step of a copy of ``model``; per-layer figures."""
    model = copy.deepcopy(model)
    model.eval()  # the logits without dropout: how much they depend on the image
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        test_logits = model(x).float()
    model.train()
    torch.manual_seed(cfg.seed)  # the baselines' nn.Dropout: the same masks in both passes
    set_dropout_step(model, 0, cfg.seed)
    layers = _layers(model)
    acts: dict[str, torch.Tensor] = {}
    hooks = [
        mod.register_forward_hook(lambda m, i, o, name=name: acts.__setitem__(name, o.detach()))
        for name, mod, _ in layers
    ]
    opt = build_optimizer(model.named_parameters(), cfg.train)
    before = {name: w.weight.detach().clone() for name, _, w in layers}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    grads = {name: float(w.weight.grad.norm()) for name, _, w in layers}
    opt.step()
    for h in hooks:
        h.remove()
    rows = []
    for name, _, w in layers:
        a = acts[name].float()
        delta = float((w.weight.detach() - before[name]).norm())
        ratio = delta / max(float(before[name].norm()), 1e-30)
        rows.append({
            "layer": name, "mean": float(a.mean()), "std": float(a.std()),
            "grad_norm": grads[name], "update_ratio": ratio,
        })  # fmt: skip
    return {
        "rows": rows,
        "loss": float(loss.detach()),
        "logits": test_logits,
        # image-dependent part: each class's logit std across the batch, averaged over classes
        "spread": float(test_logits.std(0).mean()),
        "size": float(test_logits.abs().mean()),
    }


def init_report(cfg: Config, batch: int = 64) -> dict:
    """The figures of the module docstring for ``cfg``, fp32 and bf16, on ``batch`` images."""
    torch.manual_seed(cfg.seed)
    size = input_size(cfg)
    data = build_data(cfg, size, "cpu")
    x, y = next(data.train_batches(0, batch, cfg.seed))
    model = build_model(cfg, data.num_classes, data.in_channels)
    out = {
        "pixels": pixel_scale(cfg),
        "input_std": float(x.std()),
        "chance_loss": math.log(data.num_classes),
    }
    out["fp32"] = _pass(model, cfg, x, y, amp=False)
    out["bf16"] = _pass(model, cfg, x, y, amp=True)
    err = out["bf16"]["logits"] - out["fp32"]["logits"]
    out["bf16_logit_error"] = float(err.std(0).mean())  # same measure as the spread
    return out


def format_report(cfg: Config, report: dict) -> str:
    """The report as text: one table per precision, then the logits' figures."""
    amp = "on" if cfg.train.amp else "off"
    lines = [
        f"init health: {cfg.model.name}, pixels {report['pixels']} (input std "
        f"{report['input_std']:.3g}), init {cfg.model.init}, train.amp {amp}",
    ]
    head = f"{'layer':<6} {'out mean':>10} {'out std':>10} {'grad norm':>10} {'update/w':>10}"
    for prec in ("fp32", "bf16"):
        r = report[prec]
        lines += ["", f"{prec}{' autocast' if prec == 'bf16' else ''}:", head, "-" * len(head)]
        for row in r["rows"]:
            lines.append(
                f"{row['layer']:<6} {row['mean']:>10.3g} {row['std']:>10.3g} "
                f"{row['grad_norm']:>10.3g} {row['update_ratio']:>10.3g}"
            )
        lines.append(
            f"loss {r['loss']:.4f} (chance {report['chance_loss']:.4f}); logits at test (no "
            f"dropout): spread across images {r['spread']:.3g}, mean size {r['size']:.3g}"
        )
    ratio = report["bf16_logit_error"] / max(report["fp32"]["spread"], 1e-30)
    lines += [
        "",
        f"bf16 rounding of the logits {report['bf16_logit_error']:.3g} against their spread "
        f"across images {report['fp32']['spread']:.3g} (fp32): ratio {ratio:.2f}",
        "update/w: |first step's change| / |weight|; spread: per-class std over the batch",
    ]
    return "\n".join(lines)

"""The training step on a GPU, for tests/test_gpu.py: without a host sync, and compiled.

Each builds what the trainer builds (data, execution, optimiser, :class:`TrainStep`) for the
debug net in one process on ``device`` and runs a few steps; they return report lines and raise
AssertionError naming what went wrong.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from devicetrace import DeviceTrace
from fakedata import make_fashion

from alexnet2012.config import load_config
from alexnet2012.control import torchrun
from alexnet2012.data import build_data
from alexnet2012.nets.build import input_size
from alexnet2012.parallel import comm
from alexnet2012.parallel.execution import build_execution
from alexnet2012.training.optim import build_optimizer
from alexnet2012.training.state import RunState
from alexnet2012.training.step import TrainStep

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml")


def _parts(device: str, overrides: list[str]):
    cfg = load_config(CONFIG, ["train.batch_size=32", "wandb.mode=disabled", *overrides])
    env = torchrun.Env(0, 1, 0, torch.device(device), "none", comm.single())
    torch.manual_seed(cfg.seed)
    data = build_data(cfg, input_size(cfg), env.device)
    ex, forward = build_execution(cfg, env, data.num_classes, data.in_channels)
    step = TrainStep(cfg, ex, forward, build_optimizer(ex.named_parameters(), cfg.train))
    return cfg, data, ex, step


def no_sync_steps(device: str, tmp: Path | None = None) -> list[str]:
    """Steps 3-6 of synthetic and Fashion-MNIST-shaped data (crop, flip), bf16 autocast and
    channels_last, eager and compiled, under ``torch.cuda.set_sync_debug_mode("error")``: the
    batch, the step and the metrics window the loop adds to. Steps 1-2 warm up (compiles,
    library handles, the pinned pool)."""
    lines = []
    with tempfile.TemporaryDirectory() as scratch:
        fm = make_fashion(Path(tmp or scratch) / "fm", n_train=256)
        sets = {"synthetic": ["data.name=synthetic", "data.synthetic_size=256"],
                "fashion_mnist": ["data.name=fashion_mnist", f"data.root={fm}",
                                  "data.resize=104"]}  # fmt: skip
        for name, data_over in sets.items():
            for compiled in (False, True):
                over = [*data_over, "train.amp=true", "train.channels_last=true",
                        f"train.compile={str(compiled).lower()}"]  # fmt: skip
                cfg, data, ex, step = _parts(device, over)
                state, batches = RunState(), data.train_batches(0, cfg.train.batch_size, 0)
                for i, (x, y) in zip(range(2), batches, strict=False):
                    loss, out = step(x, y, i)
                    state.add(loss.detach().float(), out, y, ex.holds_logits)
                torch.cuda.synchronize()
                with DeviceTrace("cuda") as trace:  # what the host sends, and how
                    x, y = next(batches)
                assert trace.problems() == [], (name, trace.problems())
                assert all(c["pinned"] and c["non_blocking"] for c in trace.copies), trace.copies
                assert trace.copies or device == "cpu"  # the draws do cross to the GPU
                torch.cuda.set_sync_debug_mode("error")  # any host sync raises
                try:
                    for i in range(2, 6):
                        loss, out = step(x, y, i)
                        state.add(loss.detach().float(), out, y, ex.holds_logits)
                        x, y = next(batches)
                        assert x.device.type == y.device.type == torch.device(device).type
                finally:
                    torch.cuda.set_sync_debug_mode(0)
                n = len(trace.copies)
                lines.append(f"{name} compile={compiled}: 4 steps without a host sync; "
                             f"{n} pinned non-blocking copies per batch")  # fmt: skip
    return lines


def compiled_against_eager(device: str, kind: str, tol: float, steps: int = 5) -> list[str]:
    """The compiled step's losses against eager's (``kind``: fp32, or bf16 with channels_last),
    graphs compiled per step, graph breaks."""
    from torch._dynamo.utils import counters

    losses = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        over = ["data.name=synthetic", "data.synthetic_size=256",
                f"train.compile={str(compiled).lower()}"]  # fmt: skip
        if kind == "bf16":
            over += ["train.amp=true", "train.channels_last=true"]
        cfg, data, ex, step = _parts(device, over)
        counters.clear()
        out, graphs = [], []
        for i, (x, y) in zip(range(steps), data.train_batches(0, cfg.train.batch_size, 0),
                             strict=False):  # fmt: skip
            out.append(step(x, y, i)[0].detach())
            graphs.append(counters["stats"]["unique_graphs"])
        losses[compiled] = [v.item() for v in out]
    err = max(abs(a - b) / abs(a) for a, b in zip(losses[False], losses[True], strict=True))
    line = f"{kind}: compiled losses within {err:.1e} of eager over {steps} steps; graphs {graphs}"
    assert graphs == [graphs[0]] * steps and graphs[0] == 1, line  # one graph, at step 1 only
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert err <= tol, f"{line} (tolerance {tol})"
    return [line]

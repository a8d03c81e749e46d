"""What a run keeps track of besides the model: its step, metric windows, timing, memory."""

from __future__ import annotations

import resource
import sys
import time

import torch


def correct_counts(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How many rows have the label first (top-1) and among the first five (top-5)."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices  # (N, k)
    hit = top == y[:, None]
    return hit[:, 0].sum().float(), hit.any(1).sum().float()


def peak_memory(device: torch.device) -> int:
    """Peak bytes: CUDA max allocated on a GPU, the process's peak resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


class RunState:
    """Step counter and metric accumulators; saved in checkpoints so a resume is exact."""

    def __init__(self):
        self.step = 0
        self.steps_run = 0  # steps this process ran (for rates), not restored on resume
        self.started = time.time()
        self.window = torch.zeros(4)  # loss sum, top-1 right, top-5 right, images (log window)
        self.best_val = float("inf")
        self.last_val: dict = {}
        self.last_val_step = -1
        self.train_time = 0.0  # seconds spent in training steps (evaluation excluded)
        self._tick = time.perf_counter()
        self._timed_steps = 0  # steps this process ran since the last flush (rates only)

    def add(self, loss, logits, y, holds_logits: bool) -> None:
        if self.window.device != loss.device:
            self.window = self.window.to(loss.device)
        if holds_logits:
            c1, c5 = correct_counts(logits.detach(), y)
            n = torch.full_like(c1, len(y))  # no host-to-device copy
            self.window += torch.stack([loss * len(y), c1, c5, n])
        self.steps_run += 1
        self._timed_steps += 1

    def restart_clock(self) -> None:
        self._tick = time.perf_counter()

    def flush(self, ex, opt, batch_size: int) -> dict[str, float]:
        """Metrics of the steps since the last flush; every rank gets the same values."""
        loss, c1, c5, n = ex.share(self.window.clone()).tolist()  # waits for the device
        now = time.perf_counter()
        # rates from the steps timed here: after a resume the restored window holds steps that
        # an earlier process ran
        elapsed, steps = now - self._tick, max(self._timed_steps, 1)
        self.train_time += elapsed
        self.window.zero_()
        self._tick, self._timed_steps = now, 0
        return {
            "train/loss": loss / max(n, 1),
            "train/top1_err": 1 - c1 / max(n, 1),
            "train/top5_err": 1 - c5 / max(n, 1),
            "train/lr": opt.param_groups[0]["lr"],
            "train/images_per_s": steps * batch_size / elapsed,
            "images_seen": self.images_seen(batch_size),
            "train/step_time_s": elapsed / steps,
        }

    def images_seen(self, batch_size: int) -> int:
        """Images trained on up to this step (``batch_size``: per step, over all replicas):
        the axis on which runs of any batch size compare."""
        return self.step * batch_size

    def epoch_done(self, val: dict, at_epoch_end: bool = True) -> None:
        """Record an evaluation; only those at an epoch's end count towards the best."""
        self.last_val, self.last_val_step = dict(val), self.step
        if at_epoch_end:
            self.best_val = min(self.best_val, val["val/top1_err"])

    def summary(self, batch_size: int) -> dict:
        images, t = self.steps_run * batch_size, self.train_time
        return {
            "steps": self.step,
            "images_per_s": images / t if t else 0.0,
            "step_time_s": t / self.steps_run if self.steps_run else 0.0,
            "best_val_top1_err": self.best_val,
            **{f"final_{k.replace('/', '_')}": v for k, v in self.last_val.items()},
        }

    def state_dict(self) -> dict:
        return {"step": self.step, "window": self.window.cpu(), "best_val": self.best_val,
                "last_val": self.last_val,
                "last_val_step": self.last_val_step}  # fmt: skip

    def load_state_dict(self, s: dict) -> None:
        self.step, self.best_val, self.last_val = s["step"], s["best_val"], s["last_val"]
        self.window = s["window"].clone()
        self.last_val_step = s.get("last_val_step", -1)

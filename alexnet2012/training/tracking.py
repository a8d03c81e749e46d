"""Run tracking: ``metrics.jsonl``, ``summary.json`` and ``config.yaml`` in the run folder, and
the same numbers in Weights & Biases when it is installed and wanted.

Only the main rank gets a :class:`RunLogger`; the others get a :class:`NullLogger` with the same
methods, so call sites never test the rank. W&B is optional and never stops, stalls or changes
training: an online start that cannot reach the server logs offline into the run folder instead
(:mod:`.wandbrun`); a missing package or any other W&B error costs one warning and W&B is
switched off.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from alexnet2012.files import write_atomic, writing
from alexnet2012.training import wandbrun

__all__ = ["NullLogger", "RunLogger", "describe_wandb", "make_logger"]

log = logging.getLogger(__name__)

METRICS, SUMMARY, CONFIG = "metrics.jsonl", "summary.json", "config.yaml"


def _number(v):
    return v if isinstance(v, int | float) else float(v)  # tensors and numpy scalars


def per_rank_keys(d: dict) -> dict:
    """``d`` with each ``*_per_rank`` list also as one key per rank (``..._per_rank/rank1``),
    so W&B shows every rank's figure, not a list it cannot chart."""
    out = dict(d)
    for key, value in d.items():
        if key.endswith("_per_rank") and isinstance(value, list):
            out.update({f"{key}/rank{i}": v for i, v in enumerate(value)})
    return out


class RunLogger:
    """Writes one run folder; forwards the same numbers to W&B once :meth:`start_wandb` ran.

    ``resume_step=k`` drops lines of an existing ``metrics.jsonl`` whose step is past ``k``
    (they were logged after the checkpoint being resumed), then appends.
    """

    def __init__(self, run_dir, resume_step=None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / METRICS
        if resume_step is not None and path.exists():
            self._truncate(path, resume_step)
        self._file = path.open("a")
        self._summary = {}
        if (self.run_dir / SUMMARY).exists():
            self._summary = json.loads((self.run_dir / SUMMARY).read_text())
        self._wandb = None  # the W&B run, or None when W&B is off (start_wandb)

    @staticmethod
    def _truncate(path: Path, resume_step: int) -> None:
        kept = []
        for line in path.read_text().splitlines():
            try:
                step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash
            if step <= resume_step:
                kept.append(line + "\n")
        write_atomic(path, "".join(kept))

    def start_wandb(self, wandb_cfg, cfg_dict=None, run_name=None) -> None:
        """Start the W&B run (:mod:`.wandbrun`): online within ``wandb.init_timeout_s``, else
        offline in this folder, else none; training goes on in every case."""
        self._wandb = wandbrun.start(self.run_dir, wandb_cfg, cfg_dict, run_name)

    def _wandb_failed(self, what: str, e: Exception) -> None:
        log.warning("W&B %s failed (%s: %s); W&B is off for this run", what, type(e).__name__, e)
        self._wandb = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Append ``{"step": step, **metrics}`` to ``metrics.jsonl`` and send it to W&B."""
        row = {"step": int(step), **{k: _number(v) for k, v in metrics.items()}}
        with writing(self.run_dir / METRICS):
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        if self._wandb is not None:
            try:
                self._wandb.log({k: v for k, v in row.items() if k != "step"}, step=int(step))
            except Exception as e:
                self._wandb_failed("log", e)

    def summary(self, d: dict) -> None:
        """Merge ``d`` into ``summary.json`` (written atomically) and the W&B run summary."""
        self._summary.update(d)
        write_atomic(self.run_dir / SUMMARY, json.dumps(self._summary, indent=2) + "\n")
        if self._wandb is not None:
            try:
                self._wandb.summary.update(per_rank_keys(d))
            except Exception as e:
                self._wandb_failed("summary", e)

    def save_config(self, cfg_dict: dict) -> None:
        """Write the resolved configuration to ``config.yaml``."""
        write_atomic(self.run_dir / CONFIG, yaml.safe_dump(cfg_dict, sort_keys=False))

    def close(self, exit_code: int = 0) -> None:
        """Close ``metrics.jsonl`` and finish the W&B run with ``exit_code``."""
        if not self._file.closed:
            self._file.close()
        if self._wandb is not None:
            run, self._wandb = self._wandb, None
            try:
                run.finish(exit_code=exit_code)
            except Exception as e:
                self._wandb_failed("finish", e)


class NullLogger:
    """The logger of the non-main ranks: every method does nothing."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def summary(self, d: dict) -> None:
        pass

    def save_config(self, cfg_dict: dict) -> None:
        pass

    def close(self, exit_code: int = 0) -> None:
        pass


def make_logger(run_dir, cfg_dict, wandb_cfg, is_main: bool, resume_step=None, run_name=None):
    """A :class:`RunLogger` (which also writes ``config.yaml``) on the main rank, else a
    :class:`NullLogger`. ``wandb_cfg=None`` means no W&B. ``config.yaml`` is written before
    W&B starts, so a run stopped while W&B waits for its server can be resumed or replaced."""
    if not is_main:
        return NullLogger()
    logger = RunLogger(run_dir, resume_step=resume_step)
    if cfg_dict is not None:
        logger.save_config(cfg_dict)
    if wandb_cfg is not None:
        logger.start_wandb(wandb_cfg, cfg_dict, run_name)
    return logger


def describe_wandb(run_dir) -> str | None:
    """The offline W&B run folder(s) under ``run_dir/wandb``, space-separated, for
    ``wandb sync <path>``; None when there are none."""
    runs = sorted(str(p) for p in Path(run_dir, "wandb").glob("offline-run-*") if p.is_dir())
    return " ".join(runs) or None

"""The comparison as a W&B run of job type ``report``: its table, curves, throughput and the
compared runs' first-layer kernels, with the W&B runs it compared named in its config.

It is logged when W&B is on for the compared runs: the mode, project and group come from the
first compared run's config whose ``wandb.mode`` resolves to online or offline (as training
resolves it, ``WANDB_MODE`` included). Offline, it lands in ``<out>/wandb/offline-run-*``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alexnet2012.report.runs import Run
from alexnet2012.training.wandbrun import resolve_mode

log = logging.getLogger(__name__)


def _settings(runs: list[Run]) -> tuple[str, dict] | None:
    for run in runs:
        w = run.config.get("wandb") or {}
        mode = resolve_mode(w.get("mode", "disabled"))
        if mode != "disabled":
            return mode, w
    return None


def compared(runs: list[Run]) -> list[dict]:
    """Each compared run: name, folder and W&B run id (when it has one)."""
    out = []
    for run in runs:
        id_file = Path(run.path) / "wandb_id.txt"
        wandb_id = id_file.read_text().strip() if id_file.is_file() else None
        out.append({"name": run.name, "path": run.path, "wandb_id": wandb_id})
    return out


def log_report(runs: list[Run], result: dict, out: str | Path) -> str | None:
    """Log the report to W&B when it is on for ``runs``; the W&B run id, or None."""
    found = _settings(runs)
    if found is None:
        return None
    try:
        import wandb
    except ImportError:
        log.warning("W&B is on for these runs but wandb is not installed; report not logged")
        return None
    mode, w = found
    out = Path(out)
    try:
        run = wandb.init(dir=str(out), project=w.get("project") or None,
                         entity=w.get("entity") or None, group=w.get("group") or None,
                         job_type="report", name=f"compare {len(runs)} runs", mode=mode,
                         config={"compared": compared(runs)},
                         settings=wandb.Settings(silent=True))  # fmt: skip
        images = {name: wandb.Image(str(out / f"{name}.png")) for name in ("curves", "throughput")}
        for r in runs:
            if (Path(r.path) / "kernels.png").is_file():
                images[f"kernels/{r.name}"] = wandb.Image(str(Path(r.path) / "kernels.png"))
        header, *rows = [
            line.strip("|").split("|") for line in result["table"] if "---" not in line
        ]
        table = wandb.Table(columns=[h.strip() for h in header],
                            data=[[c.strip() for c in row] for row in rows])  # fmt: skip
        run.log({**images, "runs": table})
        run.summary.update({"compared_runs": [c["name"] for c in compared(runs)]})
        run_id = run.id
        run.finish()
    except Exception as e:  # W&B trouble never costs the report on disk
        log.warning("W&B report not logged (%s: %s)", type(e).__name__, e)
        return None
    log.info("W&B %s report run %s in %s", mode, run_id, out / "wandb")
    return run_id

"""The job a process belongs to in all its attempts: torchrun's restarts and Slurm's requeues.

A job runs again in two ways. ``torchrun --max-restarts=N`` restarts its workers after a failure
(``TORCHELASTIC_RESTART_COUNT`` grows; the run id, ``--rdzv-id``, stays). Slurm requeues a batch
job (``sbatch --requeue`` and a preemption or node failure, ``scontrol requeue``): the job keeps
its id (``SLURM_JOB_ID``) and ``SLURM_RESTART_COUNT`` grows. :func:`job` names the job in every
attempt, :func:`restarted` says whether this is a later one. A run folder records the job that
started it (``training/checkpoint.py``); a later attempt of that job, and only of that job,
resumes there, so a new job (a new Slurm id, a new torchrun id) never takes an old folder over.
"""

from __future__ import annotations

import os

from alexnet2012.control import torchrun


def slurm_job() -> str:
    """``slurm-<cluster>-<job id>`` inside a Slurm job, "" outside one. The cluster's name is
    part of it because a new cluster numbers its jobs from 1 again."""
    job = os.environ.get("SLURM_JOB_ID", "").strip()
    if not job:
        return ""
    cluster = os.environ.get("SLURM_CLUSTER_NAME", "").strip()
    return "-".join(["slurm", *([cluster] if cluster else []), job]).replace(" ", "_")


def slurm_restart_count() -> int:
    """How many times Slurm has requeued this job (0: its first run, or outside Slurm)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def job() -> str:
    """This job's name in all its attempts (no spaces): torchrun's run id under
    ``--max-restarts``, Slurm's job under Slurm, both joined by ``+``; "" when neither can run
    it again (then no run folder is resumed without ``--resume``)."""
    return "+".join(p for p in (torchrun.restartable_job(), slurm_job()) if p)


def restarted() -> bool:
    """Whether this is a later attempt of its job: a torchrun restart or a Slurm requeue."""
    return torchrun.restart_count() > 0 or slurm_restart_count() > 0

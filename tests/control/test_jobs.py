"""A job in all its attempts: torchrun's restarts and Slurm's requeues resume the folder the job
started, and only they; a new job (a new Slurm id) never takes an old folder over."""

import pytest

from alexnet2012.config import load_config
from alexnet2012.control import jobs
from alexnet2012.training import checkpoint
from alexnet2012.training.run import start_policy

LAUNCH = (
    "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
    "SLURM_JOB_ID", "SLURM_CLUSTER_NAME", "SLURM_RESTART_COUNT", "ALEXNET2012_RUN_DIR",
)  # fmt: skip


@pytest.fixture
def clean(monkeypatch):
    for k in LAUNCH:
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def test_names_a_job_by_torchrun_and_slurm(clean):
    assert jobs.job() == "" and not jobs.restarted()
    clean.setenv("SLURM_JOB_ID", "4117")
    assert jobs.job() == "slurm-4117"
    clean.setenv("SLURM_CLUSTER_NAME", "gpu")  # a new cluster numbers its jobs from 1 again
    assert jobs.job() == "slurm-gpu-4117"
    clean.setenv("TORCHELASTIC_RUN_ID", "4117")
    clean.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    assert jobs.job() == "4117+slurm-gpu-4117" and not jobs.restarted()
    clean.setenv("SLURM_RESTART_COUNT", "1")  # scontrol requeue, a preemption
    assert jobs.restarted()
    clean.setenv("SLURM_RESTART_COUNT", "0")
    clean.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    assert jobs.restarted()


def _folder(tmp_path, job):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "ckpt-00000030.pt").write_bytes(b"")
    checkpoint.mark_job(run_dir, job)
    return run_dir


def _resumes(run_dir) -> bool:
    return start_policy(load_config("configs/debug.yaml", [f"run.dir={run_dir}"]), False)


def test_a_requeue_resumes_its_folder_and_a_new_job_does_not(clean, tmp_path):
    clean.setenv("SLURM_JOB_ID", "17")
    run_dir = _folder(tmp_path, jobs.job())
    assert not _resumes(run_dir)  # the first attempt: a fresh start (refused: checkpoints)
    clean.setenv("SLURM_RESTART_COUNT", "1")
    assert _resumes(run_dir)  # the same job id after a requeue
    clean.setenv("SLURM_JOB_ID", "18")
    assert not _resumes(run_dir)  # another job, even on its own requeue
    clean.setenv("SLURM_JOB_ID", "17")
    checkpoint.mark_refused(run_dir, jobs.job())  # a job under a reused id was refused here
    assert not _resumes(run_dir)


def test_torchrun_under_slurm_resumes_on_either_restart(clean, tmp_path):
    clean.setenv("SLURM_JOB_ID", "17")
    clean.setenv("TORCHELASTIC_RUN_ID", "17")
    clean.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    run_dir = _folder(tmp_path, jobs.job())
    assert not _resumes(run_dir)
    clean.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # a worker died: torchrun restarted it
    assert _resumes(run_dir)
    clean.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    clean.setenv("SLURM_RESTART_COUNT", "2")  # requeued: torchrun counts from 0 again
    assert _resumes(run_dir)
    clean.setenv("TORCHELASTIC_RUN_ID", "18")  # another torchrun job in the same allocation
    assert not _resumes(run_dir)

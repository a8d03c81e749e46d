"""Fault injection: kills, hangs, NaNs, signals and corrupt files, at chosen and seeded points.

Every fault ends one of two ways: the run continues (on its own under ``torchrun
--max-restarts``, or with ``--resume``) and finishes with exactly the metrics of a run that was
never disturbed, or it stops with a clear message. Either way every checkpoint it left loads.
Faults go in through ``ALEXNET2012_FAULT`` (:mod:`faults`, acting at the hook points of
:mod:`alexnet2012.control.hooks`). The tally (faults injected, runs recovered, steps lost,
files corrupted) is printed at the end (``pytest -s``), in the terminal summary, and written to
``<pytest base temp>/fault_table.txt``.
"""

import math
import random
import re
import shutil
import signal
import socket
import time
from pathlib import Path

import faults
import pytest
import torch
from faultkit import (
    SAVES,
    SEED,
    TIMEOUT,
    TablePlugin,
    assert_same_run,
    before,
    cfg_for,
    history,
    record,
    resume,
    run_all,
    start,
    stop,
    table,
    verify,
)

from alexnet2012.control import hooks
from alexnet2012.control.runlock import LOCK_FILE
from alexnet2012.training import checkpoint, loop, snapshot


@pytest.fixture(scope="module", autouse=True)
def fault_table(request, tmp_path_factory):
    """The tally at the end; one thread here, as in the subprocesses, so the bits agree."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    if not request.config.pluginmanager.has_plugin("alexnet2012-fault-table"):
        request.config.pluginmanager.register(TablePlugin(), "alexnet2012-fault-table")
    yield
    torch.set_num_threads(threads)
    path = tmp_path_factory.getbasetemp() / "fault_table.txt"
    path.write_text(table())
    print(f"\n{table()}(written to {path})")


@pytest.fixture(scope="module")
def base_one(tmp_path_factory):
    """The undisturbed one-process run every one-process recovery must reproduce exactly."""
    run_dir = tmp_path_factory.mktemp("base") / "one"
    loop.run(cfg_for(run_dir))
    return run_dir


def test_kill_in_save_and_at_a_random_step_then_resume(tmp_path, base_one):
    """SIGKILL at each stage of a save, and after a random step: the previous checkpoint loads,
    --resume reproduces the unbroken run, and its saves remove what the killed save left."""
    k = random.Random(SEED).randint(6, 23)
    faults = {
        f"kill_in_save@step=10,at={at}": (10, 10 if at == "rename" else 5)
        for at in ("payload", "sidecar", "rename")
    } | {f"kill@step={k}": (k, before(k))}
    procs = [start(tmp_path / f"r{i}", f, log=tmp_path / f"{i}.log") for i, f in enumerate(faults)]
    codes = run_all(procs)
    for i, (rc, (fault, (died, resumes_at))) in enumerate(zip(codes, faults.items(), strict=True)):
        out, run_dir = (tmp_path / f"{i}.log").read_text(), tmp_path / f"r{i}"
        assert rc == -signal.SIGKILL and "fault injection: SIGKILL" in out, out[-2000:]
        assert max(verify(run_dir)) == resumes_at, fault
        resume(run_dir, "train.checkpoint_every=3")  # step 10 is not saved again
        assert_same_run(run_dir, base_one)
        files = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
        pairs = sorted(p.name + s for p in checkpoint.checkpoints(run_dir) for s in ("", ".sha256"))
        assert files == pairs, "an interrupted save left a stray file"
        record(fault, f"--resume from step {resumes_at}, same metrics", died - resumes_at)


DAMAGE = ("truncate", "flip", "empty", "no sidecar", "bad sidecar", "foreign")


def damage(path: Path, how: str, rng: random.Random) -> None:
    """Damage checkpoint ``path`` as a crash, a disk or a user might (at a random offset)."""
    data, side = path.read_bytes(), path.with_name(path.name + ".sha256")
    i = rng.randrange(len(data))
    if how == "foreign":  # another project's file, with a checksum that matches it
        torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, path)
        side.write_text(f"{checkpoint._sha256(path)}  {path.name}\n")
    elif how in ("no sidecar", "bad sidecar"):
        side.unlink() if how == "no sidecar" else side.write_text("0" * 64 + f"  {path.name}\n")
    else:
        flipped = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
        path.write_bytes({"truncate": data[:i], "flip": flipped, "empty": b""}[how])


def test_corrupt_checkpoints_are_named_and_skipped(tmp_path, base_one, caplog):
    """Seeded random damage to the newest checkpoint: the message names the file and loading
    falls back to the previous one; with both damaged, resume is refused and no file touched;
    a resume past a truncated newest reproduces the unbroken run."""
    run_dir = tmp_path / "run"
    loop.run(cfg_for(run_dir, "train.max_steps=12"))
    newest, previous = checkpoint.checkpoints(run_dir)  # steps 12 and 10
    rng = random.Random(SEED)
    saved = {p: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    for how in [*DAMAGE, *rng.choices(DAMAGE, k=4), "both"]:
        for path in (newest, previous) if how == "both" else (newest,):
            damage(path, rng.choice(DAMAGE) if how == "both" else how, rng)
        caplog.clear()
        if how == "both":
            kept = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
            with pytest.raises(checkpoint.CheckpointError, match="none of its 2 checkpoint file"):
                resume(run_dir)
            assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == kept
            record("every checkpoint damaged", "resume refused, files untouched")
        else:
            with pytest.raises(checkpoint.CheckpointError, match=newest.name):
                checkpoint.load(newest)
            payload, path = checkpoint.load_latest(run_dir)
            assert path == previous and payload["step"] == 10 and newest.name in caplog.text
            record(f"corrupt newest checkpoint: {how}", "named, skipped, step 10 loaded")
        for p, data in saved.items():
            p.write_bytes(data)
    damage(newest, "truncate", rng)
    resume(run_dir, "train.max_steps=24")
    assert f"skipping checkpoint: {newest}: checksum mismatch" in caplog.text
    assert_same_run(run_dir, base_one)
    record("truncated newest, then --resume", "resumed from step 10, same metrics", 12 - 10)


def test_nan_loss_stops_before_saving(tmp_path, base_one, monkeypatch):
    """A NaN loss at a random step: TrainingError naming the step, no checkpoint after it, and
    a resume (the fault gone) reproduces the unbroken run."""
    step, run_dir = random.Random(SEED + 2).randint(6, 20), tmp_path / "run"
    monkeypatch.setenv("ALEXNET2012_FAULT", f"nan@step={step}")
    previous = faults.install()
    try:
        with pytest.raises(loop.TrainingError, match=f"loss became nan at step {step};"):
            loop.run(cfg_for(run_dir))
    finally:
        hooks.install(previous)
    monkeypatch.delenv("ALEXNET2012_FAULT")
    assert max(verify(run_dir)) == before(step)
    assert all(map(math.isfinite, history(run_dir).values()))
    resume(run_dir)
    assert_same_run(run_dir, base_one)
    record(f"nan@step={step}", f"stopped at {step}, --resume, same metrics", step - before(step))


def test_diverging_run_never_saves_non_finite_weights(tmp_path, monkeypatch):
    """A huge learning rate stops the run with every checkpoint finite; weights that turn inf
    while the loss still looks finite stop it before the save."""
    with pytest.raises(loop.TrainingError, match=r"loss became nan|weights .* non-finite"):
        loop.run(cfg_for(tmp_path / "lr", "train.lr=10000.0", "train.checkpoint_every=1"))
    assert verify(tmp_path / "lr")  # at least one checkpoint, all finite
    record("train.lr=10000.0", "stopped, every checkpoint finite")
    real = snapshot.payload

    def poisoned(run):
        payload = real(run)
        if run.state.step == 10:
            payload["model"]["conv1.weight"][0, 0, 0, 0] = float("inf")
        return payload

    monkeypatch.setattr(snapshot, "payload", poisoned)
    with pytest.raises(loop.TrainingError, match="conv1.weight became non-finite by step 10"):
        loop.run(cfg_for(tmp_path / "inf"))
    assert verify(tmp_path / "inf") == [5]
    record("inf weight at a save (step 10)", "stopped, step 5 kept")


@pytest.mark.parametrize("how", ["hook", "outside"])
def test_signal_saves_and_resume_continues(tmp_path, base_one, how):
    """SIGTERM after a chosen step (the hook), or Ctrl-C's SIGINT at a random moment (sent by the
    test): exit 130 naming the resume command, a checkpoint at the stop, and the resumed run
    equals the unbroken one."""
    rng = random.Random(SEED + 3)
    step, lines = rng.randint(3, 20), rng.randint(2, 12)  # after a step, or n logged steps
    run_dir, log = tmp_path / "run", tmp_path / "cli.log"
    proc = start(run_dir, f"signal@step={step}" if how == "hook" else "", log=log)
    metrics = run_dir / "metrics.jsonl"
    try:
        if how == "outside":
            while not (metrics.is_file() and metrics.read_text().count("\n") >= lines):
                assert proc.poll() is None, "the run ended before the signal"
                time.sleep(0.01)
            proc.send_signal(signal.SIGINT)
        rc, out = proc.wait(timeout=TIMEOUT), log.read_text()
    finally:
        stop(proc)
    stopped = max(verify(run_dir))
    assert rc == 130 and (how == "outside" or stopped == step), out[-2000:]
    assert f"stopped by a signal at step {stopped}; checkpoint saved in {run_dir}" in out
    assert f"Continue with: alexnet2012 train --resume {run_dir}" in out
    resume(run_dir)
    assert_same_run(run_dir, base_one)
    fault = f"SIGTERM after step {step}" if how == "hook" else f"SIGINT after {lines} log lines"
    record(fault, f"exit 130 at step {stopped}, same metrics", 0)


def test_dead_hung_or_absent_peer_ends_the_survivor_quickly(tmp_path):
    """Rank 1 SIGKILLed or hung mid-run, or never started: rank 0 exits 1 with a clear message,
    not a traceback, within 60 s (parallel.timeout_s=10); its checkpoints stay loadable."""
    step, procs, kinds = random.Random(SEED + 5).randint(6, 12), {}, ("kill", "hang", "absent")
    for kind in kinds:
        with socket.socket() as sock:  # a free port for this pair's store
            sock.bind(("127.0.0.1", 0))
            port = str(sock.getsockname()[1])
        for r in (0,) if kind == "absent" else (0, 1):
            procs[kind, r] = start(tmp_path / kind, f"{kind}@step={step},rank=1",
                                   "parallel.timeout_s=10", log=tmp_path / f"{kind}{r}.log",
                                   RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port)  # fmt: skip
    fault_at, exit_at = {"absent": time.monotonic()}, {}
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(exit_at) < len(kinds) and time.monotonic() < deadline:
            for kind in kinds:
                log1 = tmp_path / f"{kind}1.log"
                if kind not in fault_at and "fault injection" in log1.read_text():
                    fault_at[kind] = time.monotonic()
                if kind not in exit_at and procs[kind, 0].poll() is not None:
                    exit_at[kind] = time.monotonic()
            time.sleep(0.05)
    finally:
        for proc in procs.values():
            stop(proc)
    for kind in kinds:
        out = (tmp_path / f"{kind}0.log").read_text()
        assert kind in fault_at and kind in exit_at, (kind, out[-3000:])
        waited = exit_at[kind] - fault_at[kind]
        assert procs[kind, 0].returncode == 1 and waited < 60, (waited, out[-3000:])
        words = "could not join the other rank" if kind == "absent" else "died or stopped answ"
        assert words in out and "Traceback" not in out, out[-3000:]
        kept = [] if kind == "absent" else [x for x in SAVES if x < step][-2:]
        assert sorted(verify(tmp_path / kind)) == kept
        fault = "rank 1 never started" if kind == "absent" else f"{kind}@step={step},rank=1"
        record(f"{fault} (no restarts)", f"rank 0 out in {waited:.0f} s, exit 1")


@pytest.fixture(scope="module")
def base_two(tmp_path_factory):
    """The undisturbed two-rank run (torchrun) every two-rank recovery must reproduce exactly."""
    run_dir = tmp_path_factory.mktemp("base") / "two"
    log = run_dir.parent / "two.log"
    assert run_all([start(run_dir, log=log, torchrun=True)]) == [0], log.read_text()[-4000:]
    verify(run_dir)
    return run_dir


def test_torchrun_restarts_after_sigkill_and_matches_unbroken(tmp_path, base_two):
    """Under torchrun --max-restarts=2, SIGKILL one rank after a random step, or at a random
    moment (a random time after a random step: mid-step, mid-exchange or mid-save): the job
    restarts, resumes from the newest good checkpoint and ends with exactly the metrics of an
    unbroken two-rank run."""
    rng = random.Random(SEED + 6)
    step, rank = rng.randint(3, 23), rng.randint(0, 1)
    step2, after, rank2 = rng.randint(2, 21), round(rng.uniform(0, 0.3), 2), rng.randint(0, 1)
    faults = [
        f"kill@step={step},rank={rank}",
        f"kill@step={step2},after_s={after},rank={rank2}",
    ]
    procs = [start(tmp_path / f"t{i}", f, log=tmp_path / f"t{i}.log", torchrun=True)
             for i, f in enumerate(faults)]  # fmt: skip
    for i, (fault, rc) in enumerate(zip(faults, run_all(procs), strict=True)):
        out = (tmp_path / f"t{i}.log").read_text()
        assert rc == 0 and verify(tmp_path / f"t{i}"), out[-4000:]
        assert_same_run(tmp_path / f"t{i}", base_two)
        died = int(re.search(r"fault injection: SIGKILL .*step (\d+) done\)", out).group(1))
        found = re.search(r"resumed from \S+ at step (\d+)", out)
        resumed = int(found.group(1)) if found else 0  # killed before the first checkpoint
        if "after_s" not in fault:
            assert died == step and resumed == before(step), out[-4000:]
        else:
            assert died >= step2 and resumed in (before(died), before(died + 1)), out[-4000:]
        outcome = f"died after step {died}, restarted from {resumed}, same metrics"
        record(f"torchrun: {fault}", outcome, died - resumed)


def test_sigterm_to_torchrun_saves_on_both_ranks_then_resumes(tmp_path, base_two):
    """A scheduler's preemption: SIGTERM to torchrun, which passes it to both workers. They save
    the same step and exit; ``--resume`` under torchrun then ends as the unbroken run."""
    lines = random.Random(SEED + 7).randint(3, 14)
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    proc = start(run_dir, log=log, torchrun=True)
    metrics = run_dir / "metrics.jsonl"
    try:
        while not (metrics.is_file() and metrics.read_text().count("\n") >= lines):
            assert proc.poll() is None, "the run ended before the signal"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=TIMEOUT)  # torchrun's own status: its SignalException, not the workers'
    finally:
        stop(proc)
    out, stopped = log.read_text(), max(verify(run_dir))
    said = re.findall(r"stopped by a signal at step (\d+); checkpoint saved", out)
    assert said == [str(stopped)] * 2 and stopped < 24, out[-4000:]  # both ranks, one step
    again = start(run_dir, log=tmp_path / "resume.log", torchrun=True, resume=True)
    assert run_all([again]) == [0], (tmp_path / "resume.log").read_text()[-4000:]
    assert_same_run(run_dir, base_two)
    record(f"torchrun: SIGTERM after {lines} log lines", f"both ranks saved step {stopped}, "
           "resumed, same metrics", 0)  # fmt: skip


def test_torchrun_restart_never_takes_over_an_old_run(tmp_path, base_one):
    """A new torchrun job pointed at a finished run's folder is refused in every attempt; its
    restarts do not resume the old run, which stays byte-for-byte as it was."""
    run_dir = shutil.copytree(base_one, tmp_path / "old")
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    log = tmp_path / "new_job.log"
    [rc] = run_all([start(run_dir, "", "train.lr=0.05", log=log, torchrun=True)])
    out = log.read_text()
    # 3 attempts (--max-restarts=2), each refused on at least one rank before torchrun stops it
    assert rc != 0 and out.count("already holds a run") >= 3, out[-4000:]
    assert "resumed from" not in out, out[-4000:]
    after = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    assert after.pop(run_dir / checkpoint.REFUSED_FILE)  # the refusal is recorded, nothing else
    lock = run_dir / LOCK_FILE  # but the lock's note of its latest holder: the refused job's
    assert after.pop(lock).startswith(b"host ") and before.pop(lock)
    assert after == before
    record("torchrun: new job into an old run folder", "refused in every attempt, old run intact")

"""Atomic, checksummed checkpoints in ``<run_dir>/checkpoints``.

Each checkpoint is a plain ``torch.save`` file ``ckpt-<step:08d>.pt`` with a sidecar
``ckpt-<step:08d>.pt.sha256`` in ``sha256sum`` format (``sha256sum -c`` verifies it). Writing order:
payload to ``.tmp`` + fsync, sidecar written atomically, then the payload renamed into place and
the folder fsynced; a crash leaves either the previous checkpoint set or the new one, plus at most
stray ``.tmp`` files and a sidecar without its payload, which are ignored and removed when the
run starts again and at the next save. The checksum finds damage, not intent (whoever writes a
payload can write its sidecar): every payload is read with torch's weights-only unpickler
(:mod:`.weights_only`), and one holding any other pickled type is refused by name, as damaged.
``hooks.current().in_save`` marks the points where the fault-injection tests kill a save.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from pathlib import Path

import torch

from alexnet2012.control import hooks
from alexnet2012.control.runlock import earlier_run
from alexnet2012.files import DiskFullError, disk_full, fsync_dir, write_atomic, writing
from alexnet2012.training import weights_only

log = logging.getLogger(__name__)

FORMAT = "alexnet2012-checkpoint-v1"
_NAME = re.compile(r"^ckpt-(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint file that is corrupt, truncated, unverifiable or not ours; names the file."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def step_of(path: Path) -> int:
    """The step of checkpoint file ``path`` (``ckpt-00000012.pt`` -> 12)."""
    return int(_NAME.match(path.name).group(1))


def checkpoints(run_dir: str | Path) -> list[Path]:
    """Finished checkpoints in ``run_dir/checkpoints``, newest (highest step) first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def refuse_to_overwrite(run_dir: str | Path) -> None:
    """:class:`CheckpointError` if ``run_dir`` already holds checkpoints: a new run started
    there would interleave with them and its retention would delete them."""
    if found := checkpoints(run_dir):
        raise CheckpointError(
            f"{run_dir} already holds a run ({found[0].name}); continue it with "
            f"`alexnet2012 train --resume {run_dir}`, or choose a new run.dir"
        )


# control/jobs.py names a job in all its attempts (torchrun's run id, Slurm's job id); the names
# of the files are older than Slurm's part in them
JOB_FILE = "torchrun_job"  # the job that started the run folder
REFUSED_FILE = "torchrun_refused"  # later jobs refused there (one reused a run id)


def mark_job(run_dir: str | Path, job: str) -> None:
    """Record that job ``job`` started the run in ``run_dir`` (its later attempts resume it)."""
    write_atomic(Path(run_dir) / JOB_FILE, job + "\n")  # a full disk: DiskFullError, named
    (Path(run_dir) / REFUSED_FILE).unlink(missing_ok=True)


def mark_refused(run_dir: str | Path, job: str) -> None:
    """Record that job ``job`` was refused a fresh start in ``run_dir``: if it reuses the run id
    of the job that started the run, its restarts must not take that run over."""
    path = Path(run_dir) / REFUSED_FILE
    with writing(path), open(path, "a") as f:
        f.write(job + "\n")


def resumable_by(run_dir: str | Path, job: str) -> bool:
    """Whether a later attempt of job ``job`` continues the run in ``run_dir``: the job
    started it, and no job under the same id was refused there since."""
    run_dir = Path(run_dir)
    started = (run_dir / JOB_FILE).read_text().split() if (run_dir / JOB_FILE).is_file() else []
    refused = run_dir / REFUSED_FILE
    return started == [job] and not (refused.is_file() and job in refused.read_text().split())


def save(run_dir: str | Path, payload: dict, step: int, keep: int = 2) -> Path:
    """Write ``payload`` (tagged with the format marker) as checkpoint ``step``; keep the newest
    ``keep`` checkpoints and delete the older ones. Returns the checkpoint's path."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ckpt-{step:08d}.pt"

    def write(f):
        torch.save({**payload, "format": FORMAT}, f)
        hooks.current().in_save(step, "payload")  # the .tmp file half written

    def checksum(tmp: Path):
        write_atomic(_sidecar(path), f"{_sha256(tmp)}  {path.name}\n")
        hooks.current().in_save(step, "sidecar")  # checksum written, payload not renamed

    try:
        write_atomic(path, write, before_rename=checksum)
    except DiskFullError:
        needed = sum(t.numel() * t.element_size() for t in _tensors(payload))
        raise disk_full(path, needed) from None
    hooks.current().in_save(step, "rename")  # renamed, old checkpoints still there
    fsync_dir(folder)
    log.info("saved checkpoint %s", path)
    for old in checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
        _sidecar(old).unlink(missing_ok=True)
        log.debug("removed old checkpoint %s", old)
    _remove_strays(folder)
    return path


def remove_strays(run_dir: str | Path) -> None:
    """Delete what an interrupted save left in ``run_dir``'s checkpoints (at a run's start)."""
    folder = Path(run_dir) / "checkpoints"
    if folder.is_dir():
        _remove_strays(folder)


def check_space(run_dir: str | Path) -> None:
    """:class:`DiskFullError` unless the disk has room for one more checkpoint (the newest's
    size and 5%), so a resumed run does not train up to a save that cannot be written."""
    found = checkpoints(run_dir)
    if not found:
        return
    needed = int(found[0].stat().st_size * 1.05)
    if shutil.disk_usage(found[0].parent).free < needed:
        raise disk_full(found[0].parent / "ckpt-next.pt", needed)


def _remove_strays(folder: Path) -> None:
    """Delete what an interrupted save leaves: ``*.tmp`` files and sidecars without a payload."""
    for p in folder.iterdir():
        orphan = p.name.endswith(".pt.sha256") and not p.with_suffix("").exists()
        if p.name.endswith(".tmp") or orphan:
            p.unlink(missing_ok=True)
            log.info("removed %s, left by an interrupted save", p)


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)


def load(path: str | Path, map_location="cpu") -> dict:
    """Verify and load one checkpoint; :class:`CheckpointError` naming the file if it is
    corrupt, truncated, unverifiable or lacks the project's marker."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        # Unverified file: read only to tell a foreign file from ours.
        try:
            data = weights_only.load(path, map_location)
        except weights_only.UnsafeFileError as e:
            raise CheckpointError(str(e)) from None
        except Exception as e:
            raise CheckpointError(
                f"{path}: no checksum file {sidecar.name} and cannot be read safely ({e})"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not an alexnet2012 checkpoint (no {FORMAT!r} marker)")
        raise CheckpointError(f"{path}: checksum file {sidecar.name} is missing")
    expected = sidecar.read_text(errors="replace").split()[:1]
    if not expected:
        raise CheckpointError(
            f"{path}: its checksum file {sidecar.name} is empty (a save cut short?), so the "
            "checkpoint cannot be verified; resume from the previous one, or, if you trust "
            f"this file, write its checksum: sha256sum {path.name} > {sidecar.name} (in "
            f"{path.parent})"
        )
    actual = _sha256(path)
    if expected != [actual]:
        raise CheckpointError(
            f"{path}: checksum mismatch, file truncated or corrupt "
            f"(expected {expected[0] if expected else 'nothing'}, got {actual})"
        )
    try:
        data = weights_only.load(path, map_location)
    except weights_only.UnsafeFileError as e:
        raise CheckpointError(str(e)) from None
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be unpickled ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an alexnet2012 checkpoint (no {FORMAT!r} marker)")
    return data


def load_latest(run_dir: str | Path, map_location="cpu") -> tuple[dict | None, Path | None]:
    """The newest good checkpoint as ``(payload, path)``, or ``(None, None)`` if there is none.

    A checkpoint that fails its checksum, cannot be unpickled or lacks the marker is skipped with
    a warning naming the file and the reason; the previous one is tried next.
    """
    for path in checkpoints(run_dir):
        try:
            return load(path, map_location), path
        except CheckpointError as e:
            log.warning("skipping checkpoint: %s", e)
    return None, None


def load_latest_or(run_dir: str | Path, error: type[Exception]) -> tuple[dict, Path]:
    """:func:`load_latest`, but ``error`` naming the folder (and what is wrong with the newest
    file) when no checkpoint loads: what reading a finished run's weights needs."""
    payload, path = load_latest(run_dir)
    if payload is None:
        why = newest_problem(run_dir)
        raise error(
            f"{run_dir}: no readable checkpoint in {Path(run_dir) / 'checkpoints'}"
            + (f"; the newest: {why}" if why else "")
        )
    return payload, path


def newest_problem(run_dir: str | Path) -> str:
    """Why the newest checkpoint of ``run_dir`` cannot be loaded (its error, naming the file);
    "" when it loads or there is none."""
    found = checkpoints(run_dir)
    try:
        if found:
            load(found[0])
    except CheckpointError as e:
        return str(e)
    return ""


def load_for_resume(run_dir: str | Path, map_location="cpu") -> tuple[dict, Path]:
    """:func:`load_latest`, but :class:`CheckpointError` saying why when nothing is usable."""
    found = checkpoints(run_dir)
    if not found:
        again = f"alexnet2012 train --config {Path(run_dir) / 'config.yaml'} run.dir={run_dir}"
        if earlier_run(run_dir):  # its config.yaml and metrics: moved aside, not lost
            again += " --replace"
        raise CheckpointError(
            f"{run_dir}: no checkpoint to resume from (no checkpoints/ckpt-*.pt; the run "
            f"stopped before its first); start it again: {again}"
        )
    payload, path = load_latest(run_dir, map_location)
    if payload is None:
        why = newest_problem(run_dir) or "see the warnings above"
        raise CheckpointError(
            f"{run_dir}: none of its {len(found)} checkpoint file(s) can be resumed from; the "
            f"newest: {why}. Restore a good copy into {Path(run_dir) / 'checkpoints'} or start "
            "a new run.dir"
        )
    return payload, path

"""Starting a run's W&B run: which mode, an online start that cannot stall, and the offline
fallback that keeps what it logs.

``wandb.mode=auto`` logs online when an API key is configured and offline otherwise. An online
start waits at most ``wandb.init_timeout_s`` (default 30 s; wandb's own default is 90 s) for the
server. When the server cannot be reached in that time (a compute node without internet) or
refuses the start, the run logs offline into the same run folder instead, so that
``wandb sync`` uploads it later, and one warning names the folder and that command. When the
offline start fails too, W&B is off for the run; training goes on unchanged either way.
"""

from __future__ import annotations

import logging
import netrc
import os
import uuid
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger("alexnet2012.training.tracking")  # where the run's W&B lines are told

WANDB_ID = "wandb_id.txt"
_ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline"}


def _api_key_configured() -> bool:
    """A W&B key in ``WANDB_API_KEY`` or in the netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        auth = netrc.netrc(path).authenticators(host or "api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def resolve_mode(mode: str) -> str:
    """``auto``: ``WANDB_MODE`` if set, else online with an API key, else offline."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env == "disabled":
        return "disabled"
    if env in _ENV_MODES:
        return _ENV_MODES[env]
    return "online" if _api_key_configured() else "offline"


def _gist(e: Exception) -> str:
    """``Type: first line`` of an error (wandb's network errors run to many lines)."""
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def start(run_dir: Path, wandb_cfg, cfg_dict, run_name):
    """The W&B run logging ``run_dir``, or None (W&B disabled, not installed, or failing)."""
    mode = resolve_mode(wandb_cfg.mode)
    if mode == "disabled":
        return None
    try:
        import wandb
    except ImportError:
        log.warning("W&B mode %s but wandb is not installed; logging to files only", mode)
        return None
    id_file = run_dir / WANDB_ID
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
    id_file.write_text(run_id + "\n")

    def init(how: str, timeout_s: float | None = None, run_id: str = run_id):
        return wandb.init(
            dir=str(run_dir),
            project=wandb_cfg.project or None,
            entity=wandb_cfg.entity or None,
            group=wandb_cfg.group or None,
            job_type=wandb_cfg.job_type or None,
            name=run_name or None,
            config=cfg_dict,
            mode=how,
            id=run_id,
            resume="allow",  # a resumed run continues the same W&B run
            settings=_settings(wandb, timeout_s),
        )

    if mode != "online":
        try:
            run = init(mode)
        except Exception as e:
            log.warning("W&B init failed (%s); W&B is off for this run", _gist(e))
            return None
        log.info("W&B %s run %s in %s", mode, run_id, run_dir / "wandb")
        return _charts(run)
    timeout_s = wandb_cfg.init_timeout_s
    log.info("W&B: starting online run %s (waiting up to %d s for the server)", run_id, timeout_s)
    try:
        return _charts(init("online", timeout_s))
    except Exception as e:
        online = e
    _reset(wandb)  # the failed start keeps the run id in use in wandb's service
    try:
        run = _offline(init, id_file)
    except Exception as e:
        log.warning("W&B init failed (online: %s; offline: %s); W&B is off for this run",
                    _gist(online), _gist(e))  # fmt: skip
        return None
    where = _offline_folder(run, run_dir)
    log.warning("W&B could not start online within wandb.init_timeout_s=%d (%s); logging offline "
                "into %s instead; upload it later with: wandb sync %s",
                timeout_s, _gist(online), where, where)  # fmt: skip
    return _charts(run)


def _offline(init, id_file: Path):
    """The offline run after a failed online start: under the run's id, or under a new one
    (kept in ``id_file``) when a wandb service shared with a parent process (``WANDB_SERVICE``,
    as under ``wandb agent``) still holds the failed start's id."""
    try:
        return init("offline")
    except Exception as e:
        if "in use" not in str(e):
            raise
    run_id = uuid.uuid4().hex[:8]
    run = init("offline", run_id=run_id)
    id_file.write_text(run_id + "\n")
    return run


def _settings(wandb, timeout_s: float | None):
    """Quiet settings, with wandb's start timeout when given; None for a wandb without them."""
    extra = {} if timeout_s is None else {"init_timeout": float(timeout_s)}
    for kwargs in ({"silent": True, **extra}, {"silent": True}):
        try:
            return wandb.Settings(**kwargs)
        except Exception:  # an older or newer wandb without this setting
            continue
    return None


def _reset(wandb) -> None:
    """Drop wandb's service, which still holds the run that failed to start."""
    try:
        getattr(wandb, "teardown", lambda: None)()
    except Exception as e:
        log.debug("wandb.teardown failed (%s)", _gist(e))


def _offline_folder(run, run_dir: Path) -> Path:
    """``run_dir/wandb/offline-run-<time>-<id>``, the folder ``wandb sync`` takes."""
    try:
        folder = Path(run.dir).parent  # run.dir is the run's files/ folder
    except Exception:
        folder = None
    if folder is not None and folder.name.startswith("offline-run-"):
        return folder
    found = sorted(Path(run_dir, "wandb").glob("offline-run-*"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else Path(run_dir, "wandb")


def _charts(run):
    """``run`` with one x axis for runs of any batch size or replica count (metrics carry it)."""
    try:
        run.define_metric("images_seen")
        for prefix in ("train/*", "val/*", "val10/*", "epoch"):
            run.define_metric(prefix, step_metric="images_seen")
    except Exception as e:  # the charts keep the step axis; logging goes on
        log.warning("W&B define_metric failed (%s); charts use the step", _gist(e))
    return run

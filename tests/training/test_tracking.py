"""Run tracking: the files a run folder gets, resume truncation, and W&B that never stops a run."""

import json
import logging
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml

from alexnet2012.config import WandbConfig
from alexnet2012.training.tracking import NullLogger, RunLogger, describe_wandb, make_logger
from alexnet2012.training.wandbrun import resolve_mode


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Keep W&B away from the real home, the network and any key the developer has."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    for key in ("WANDB_API_KEY", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(key, raising=False)


def read_lines(run_dir):
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def wandb_warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING and "W&B" in r.getMessage()]


def test_metrics_lines_and_keys(tmp_path):
    logger = RunLogger(tmp_path / "run")
    logger.log({"train/loss": 2.5, "train/lr": 0.01}, step=10)
    # each line is on disk as soon as it is logged
    assert read_lines(tmp_path / "run") == [{"step": 10, "train/loss": 2.5, "train/lr": 0.01}]
    logger.log({"val/top1_err": 0.75, "val/top5_err": 0.5}, step=20)
    logger.close()
    lines = read_lines(tmp_path / "run")
    assert [x["step"] for x in lines] == [10, 20]
    assert set(lines[1]) == {"step", "val/top1_err", "val/top5_err"}
    assert not (tmp_path / "run" / "wandb").exists()  # no wandb_cfg: no W&B


def test_resume_truncates_later_steps(tmp_path):
    run = tmp_path / "run"
    logger = RunLogger(run)
    for step in (10, 20, 30, 40):
        logger.log({"train/loss": float(step)}, step=step)
    logger.close()
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 50, "train/lo')  # a line cut short by a crash
    logger = RunLogger(run, resume_step=20)
    assert [x["step"] for x in read_lines(run)] == [10, 20]
    logger.log({"train/loss": 30.5}, step=30)
    logger.close()
    assert [x["step"] for x in read_lines(run)] == [10, 20, 30]
    assert read_lines(run)[-1]["train/loss"] == 30.5
    # without resume_step an existing file is appended to
    logger = RunLogger(run)
    logger.log({"train/loss": 1.0}, step=40)
    logger.close()
    assert [x["step"] for x in read_lines(run)] == [10, 20, 30, 40]


def test_summary_and_config(tmp_path):
    run = tmp_path / "run"
    logger = RunLogger(run)
    logger.summary({"best/top1_err": 0.4, "epoch": 3})
    logger.summary({"best/top1_err": 0.3})
    assert json.loads((run / "summary.json").read_text()) == {"best/top1_err": 0.3, "epoch": 3}
    assert not list(run.glob(".*.tmp"))  # the temporary file was renamed into place
    cfg = {"seed": 0, "train": {"lr": 0.01, "epochs": 2}, "model": {"cross": ["conv3", "fc8"]}}
    logger.save_config(cfg)
    text = (run / "config.yaml").read_text()
    assert yaml.safe_load(text) == cfg
    assert text.index("seed") < text.index("train") < text.index("model")  # order kept
    logger.close()
    # a resumed logger keeps the earlier summary
    logger = RunLogger(run, resume_step=0)
    logger.summary({"final/top1_err": 0.35})
    logger.close()
    assert json.loads((run / "summary.json").read_text())["epoch"] == 3


def test_null_logger_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logger = make_logger(tmp_path / "run", {"seed": 0}, WandbConfig(), is_main=False)
    assert isinstance(logger, NullLogger)
    logger.save_config({"seed": 0})
    logger.log({"train/loss": 1.0}, step=1)
    logger.summary({"x": 1.0})
    logger.close(exit_code=1)
    assert list(tmp_path.iterdir()) == [tmp_path / "home"]


def test_resolve_mode(tmp_path, monkeypatch):
    assert resolve_mode("online") == "online"
    assert resolve_mode("disabled") == "disabled"
    assert resolve_mode("auto") == "offline"  # WANDB_MODE=offline from the fixture
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_mode("auto") == "offline"  # no key anywhere
    netrc = tmp_path / "home" / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    netrc.chmod(0o600)
    assert resolve_mode("auto") == "online"
    netrc.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "abc123")
    assert resolve_mode("auto") == "online"


def test_wandb_disabled_writes_no_wandb_folder(tmp_path):
    run = tmp_path / "run"
    logger = make_logger(run, {"seed": 0}, WandbConfig(mode="disabled"), is_main=True)
    logger.log({"train/loss": 1.0}, step=1)
    logger.close()
    assert not (run / "wandb").exists() and not (run / "wandb_id.txt").exists()
    assert describe_wandb(run) is None
    assert (run / "config.yaml").exists() and len(read_lines(run)) == 1


def test_wandb_missing_warns_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    logger = make_logger(tmp_path / "run", {}, WandbConfig(mode="offline"), is_main=True)
    logger.log({"train/loss": 1.0}, step=1)
    logger.log({"train/loss": 0.5}, step=2)
    logger.summary({"x": 1})
    logger.close()
    assert len(wandb_warnings(caplog)) == 1
    assert "not installed" in wandb_warnings(caplog)[0].getMessage()
    assert len(read_lines(tmp_path / "run")) == 2


def fake_wandb(fail_on: str):
    """A stand-in wandb module. ``fail_on``: "init" (every start raises), "log", "online" (an
    online start raises, as when the server cannot be reached), "in use" (also an offline start
    under the failed one's id, as in a wandb service shared with a parent process)."""
    calls, taken = [], set()

    class Run:
        summary = {}

        def __init__(self, files):
            self.dir = files

        def log(self, data, step):
            calls.append(("log", step))
            if fail_on == "log":
                raise RuntimeError("network down")

        def finish(self, exit_code=0):
            calls.append(("finish", exit_code))

        def define_metric(self, name, **kwargs):  # images_seen as the step metric
            calls.append(("define_metric", name, kwargs.get("step_metric")))

    def init(**kwargs):
        calls.append(("init", kwargs))
        if fail_on == "init":
            raise RuntimeError("no account")
        if kwargs["mode"] == "online" and fail_on in ("online", "in use"):
            taken.add(kwargs["id"])
            raise RuntimeError("context deadline exceeded\nwhile retrying: connection refused")
        if fail_on == "in use" and kwargs["id"] in taken:
            raise RuntimeError(f"run ID {kwargs['id']} is in use")
        folder = Path(kwargs["dir"], "wandb", f"offline-run-20260101_000000-{kwargs['id']}")
        return Run(str(folder / "files"))

    module = types.SimpleNamespace(init=init, Settings=lambda **kw: kw, teardown=lambda: None)
    return module, calls


def log_three(tmp_path, mode="online"):
    logger = make_logger(tmp_path / "run", {"seed": 0}, WandbConfig(mode=mode), is_main=True)
    for step in (1, 2, 3):
        logger.log({"train/loss": 1.0 / step}, step=step)
    logger.summary({"x": 1})
    logger.close()
    assert len(read_lines(tmp_path / "run")) == 3


@pytest.mark.parametrize("fail_on", ["init", "log"])
def test_wandb_errors_warn_once(tmp_path, monkeypatch, caplog, fail_on):
    module, calls = fake_wandb(fail_on)
    monkeypatch.setitem(sys.modules, "wandb", module)
    log_three(tmp_path)
    assert len(wandb_warnings(caplog)) == 1
    assert fail_on in wandb_warnings(caplog)[0].getMessage()
    assert [c for c in calls if c[0] == "log"] == ([] if fail_on == "init" else [("log", 1)])
    assert not any(c[0] == "finish" for c in calls)  # a failed run is dropped, not finished
    kwargs = calls[0][1]
    assert kwargs["mode"] == "online" and kwargs["resume"] == "allow"
    assert kwargs["id"] == (tmp_path / "run" / "wandb_id.txt").read_text().strip()
    assert kwargs["settings"]["init_timeout"] == WandbConfig().init_timeout_s
    if fail_on == "init":  # online, then offline: both refused
        assert [c[1]["mode"] for c in calls if c[0] == "init"] == ["online", "offline"]
        assert "W&B is off" in wandb_warnings(caplog)[0].getMessage()


@pytest.mark.parametrize("fail_on", ["online", "in use"])
def test_wandb_online_failure_logs_offline(tmp_path, monkeypatch, caplog, fail_on):
    """An online start that fails (no server within wandb.init_timeout_s) costs one warning
    naming the offline run and the command that uploads it; every number still reaches it."""
    module, calls = fake_wandb(fail_on)
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "abc123")  # so auto is online
    log_three(tmp_path, mode="auto" if fail_on == "online" else "online")
    inits = [c[1] for c in calls if c[0] == "init"]
    retries = 1 if fail_on == "in use" else 0  # offline again, under a new id
    assert [k["mode"] for k in inits] == ["online", "offline"] + ["offline"] * retries
    run_id = (tmp_path / "run" / "wandb_id.txt").read_text().strip()
    assert inits[-1]["id"] == run_id and (run_id == inits[0]["id"]) == (fail_on == "online")
    folder = tmp_path / "run" / "wandb" / f"offline-run-20260101_000000-{run_id}"
    (warning,) = wandb_warnings(caplog)
    text = warning.getMessage()
    assert f"logging offline into {folder}" in text and text.endswith(f"wandb sync {folder}")
    assert "context deadline exceeded" in text and "while retrying" not in text  # first line
    assert [c for c in calls if c[0] == "log"] == [("log", 1), ("log", 2), ("log", 3)]
    assert calls[-1] == ("finish", 0)


def test_config_is_written_before_wandb_starts(tmp_path, monkeypatch):
    """A run stopped while W&B waits for its server can be resumed: config.yaml is there."""
    seen = []

    def init(**kwargs):
        seen.append((tmp_path / "run" / "config.yaml").is_file())
        raise RuntimeError("stopped")

    module = types.SimpleNamespace(init=init, Settings=lambda **kw: kw, teardown=lambda: None)
    monkeypatch.setitem(sys.modules, "wandb", module)
    make_logger(tmp_path / "run", {"seed": 0}, WandbConfig(mode="online"), is_main=True).close()
    assert seen == [True, True]


def test_wandb_offline_run(tmp_path):
    """One real offline run: the history lands in run_dir/wandb/offline-run-*/run-<id>.wandb."""
    pytest.importorskip("wandb")
    run = tmp_path / "run"
    cfg = {"seed": 0, "train": {"lr": 0.01}}
    start = time.perf_counter()
    logger = make_logger(run, cfg, WandbConfig(mode="auto", group="g"), True, run_name="t")
    logger.log({"train/loss": 2.0}, step=1)
    logger.log({"train/loss": 1.5, "val/top1_err": 0.6}, step=2)
    logger.summary({"best/top1_err": 0.6})
    logger.close()
    print(f"offline W&B run took {time.perf_counter() - start:.1f} s")
    run_id = (run / "wandb_id.txt").read_text().strip()
    (folder,) = (run / "wandb").glob("offline-run-*")
    assert describe_wandb(run) == str(folder)
    log_file = folder / f"run-{run_id}.wandb"
    assert log_file.stat().st_size > 0
    assert len(read_lines(run)) == 2 and (run / "summary.json").exists()
    assert not (tmp_path / "wandb_dir").exists()  # dir= wins over WANDB_DIR
    # wandb's own local reader, where this wandb has it
    exe = Path(sys.executable).with_name("wandb")
    exe = str(exe) if exe.exists() else shutil.which("wandb")
    if exe is None:
        return
    out = subprocess.run(
        [exe, "leet", "inspect", "--summary", "--json", str(log_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        return  # a wandb without leet
    state = json.loads(out.stdout)
    assert state["run_id"] == run_id and state["exit_code"] == 0
    assert state["summary"]["train/loss"] == 1.5 and state["summary"]["best/top1_err"] == 0.6
    assert state["config"]["train"]["lr"] == 0.01

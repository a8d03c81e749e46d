"""Read run folders written by ``alexnet2012 train``: ``config.yaml``, ``metrics.jsonl``,
``summary.json``; group runs that differ only in their seed.

A folder that lacks some of these still loads (with a warning naming the folder and what is
missing); a folder that has none of them is a :class:`RunError`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from alexnet2012.config import flatten

log = logging.getLogger(__name__)

# config keys that do not change what a run computes: they never split a group of seeds
NOT_CONFIG = ("seed", "run.", "wandb.", "parallel.timeout_s", "train.log_every",
              "train.checkpoint_every")  # fmt: skip


class RunError(ValueError):
    """A run folder that cannot be read; the message names the folder."""


@dataclass
class Run:
    """One run: its folder name, resolved config, metric rows and summary."""

    name: str
    path: str
    config: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def seed(self):
        return self.config.get("seed")

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of metric ``key`` in step order, from the rows that carry it."""
        rows = sorted((r["step"], r[key]) for r in self.metrics if key in r and "step" in r)
        return [s for s, _ in rows], [v for _, v in rows]


def config_key(config: dict) -> tuple:
    """What defines a group: the flattened config without seed, run names and logging knobs."""
    flat = flatten(config)
    return tuple(sorted((k, v) for k, v in flat.items() if not k.startswith(NOT_CONFIG)))


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not _numbers(row):
            log.warning("%s line %d is not a JSON record of numbers; skipped", path, n)
            continue
        rows.append(row)
    return rows


MEASURED = ("err", "loss", "images_per_s", "wall_s", "steps", "lr")  # summary keys holding numbers


def _numbers(d: dict) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in d.values())


def _mapping(value, path: Path, what: str) -> dict:
    """``value`` if it is a mapping, else RunError naming the file (damaged, or not ours)."""
    if not isinstance(value, dict):
        raise RunError(
            f"{path}: holds a {type(value).__name__}, not the {what} `alexnet2012 train` writes; "
            "give run folders written by train, or delete the damaged file"
        )
    return value


def load_run(path: str | Path) -> Run:
    """Read one run folder; a missing piece costs a warning naming the folder."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run folder")
    run = Run(name=path.name, path=str(path))
    found = []
    if (path / "config.yaml").is_file():
        try:
            loaded = yaml.safe_load((path / "config.yaml").read_text()) or {}
        except yaml.YAMLError as e:
            raise RunError(f"{path}/config.yaml is not valid YAML: {e}") from None
        run.config = _mapping(loaded, path / "config.yaml", "config mapping")
        found.append("config.yaml")
    if (path / "metrics.jsonl").is_file():
        run.metrics = _read_jsonl(path / "metrics.jsonl")
        found.append("metrics.jsonl")
    if (path / "summary.json").is_file():
        try:
            loaded = json.loads((path / "summary.json").read_text())
        except ValueError as e:
            raise RunError(f"{path}/summary.json is not valid JSON: {e}") from None
        run.summary = _mapping(loaded, path / "summary.json", "summary mapping")
        measured = {k: v for k, v in run.summary.items() if any(w in k for w in MEASURED)}
        if not _numbers(measured):
            raise RunError(
                f"{path}/summary.json: a measured value is not a number ({measured}); it was not "
                "written by `alexnet2012 train`, or is damaged"
            )
        found.append("summary.json")
    if not found:
        raise RunError(
            f"{path}: not a run folder (no config.yaml, metrics.jsonl or summary.json); "
            "give folders written by `alexnet2012 train`"
        )
    missing = sorted({"config.yaml", "metrics.jsonl", "summary.json"} - set(found))
    if missing:
        log.warning(
            "%s: no %s (unfinished run?); its %s stay blank",
            path,
            " or ".join(missing),
            "table cells" if "summary.json" in missing else "curves or grouping",
        )
    return run


def load_runs(paths) -> list[Run]:
    """Load several run folders; two folders with the same name get their parent prefixed."""
    runs = [load_run(p) for p in paths]
    names = [r.name for r in runs]
    for r in runs:
        if names.count(r.name) > 1:
            r.name = f"{Path(r.path).parent.name}/{r.name}"
    return runs


@dataclass
class Group:
    """Runs with one config apart from the seed."""

    name: str
    runs: list[Run]
    config: dict  # the flattened config of the first run (seed removed)


def _base_name(name: str) -> str:
    return re.sub(r"[-_.](?:seed|s)-?\d+$", "", name) or name  # "two_tower-s1" -> "two_tower"


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs with the same config apart from the seed, in order of first appearance.

    A run without ``config.yaml`` forms a group of its own (it cannot be matched)."""
    groups: dict = {}
    for i, r in enumerate(runs):
        key = config_key(r.config) if r.config else ("__alone__", i)
        groups.setdefault(key, []).append(r)
    out, used = [], set()
    for members in groups.values():
        name = _base_name(members[0].name)
        if name in used:
            name = members[0].name
        used.add(name)
        flat = {k: v for k, v in flatten(members[0].config).items() if k != "seed"}
        out.append(Group(name, members, flat))
    return out


def config_diff(a: dict, b: dict) -> dict:
    """Flattened keys whose values differ between two group configs: key -> (a value, b value)."""
    keys = {k for k in (*a, *b) if not k.startswith(NOT_CONFIG)}
    return {k: (a.get(k), b.get(k)) for k in sorted(keys) if a.get(k) != b.get(k)}

"""README.md and the pages in docs/ say only what runs: every command in their ```bash blocks
is checked as written, every relative link points to a file that exists, and the README stays a
short entry.

A command is checked by its form: ``alexnet2012 ...``, ``python -m alexnet2012 ...`` and
``torchrun ... -m alexnet2012 ...`` by the project's own parser (without running), with the
``--config`` file and the ``key=value`` overrides loaded by the config loader; ``bash
launch/X.sh`` and ``sbatch ... launch/slurm.sbatch`` by the script's existence, and the training
arguments the two launchers pass on by the parser; ``python -m alexnet2012.X`` by the module's
existence and its ``__main__`` block. A few other lines (pip, ls, ...) are allowed by name in
ALLOWED. Any other line fails: a new form of command needs a check here first.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from alexnet2012 import cli
from alexnet2012.config import load_config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250
# lines that are not this project's commands, by their first words
ALLOWED = (
    ("pip", "install"),
    ("source", ".venv/bin/activate"),
    ("ls",),
    ("scontrol", "requeue"),
    ("wandb", "sync"),
    ("git",),
)
# scripts that pass their arguments on to `alexnet2012 train`
TRAIN_LAUNCHERS = {"launch/multinode.sh", "launch/slurm.sbatch"}
# python files that are the command line with something added (torchrun FILE train ...)
CLI_SCRIPTS = {"tests/faultrun.py"}
ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def bash_commands(page: Path) -> list[str]:
    """The command lines of ``page``'s ```bash blocks: continuations joined, comments gone."""
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", page.read_text(), re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                out.append(line.strip())
    return out


def words_of(line: str) -> list[str]:
    words = shlex.split(line, comments=True)
    while words and ENV.match(words[0]):  # NAME=value before the command
        words.pop(0)
    return words


def check_cli(args: list[str]) -> None:
    """``alexnet2012 ARGS``: parsed by the command line's parser, configs and overrides loaded."""
    assert args, "alexnet2012 without a command"
    parser = cli.build_parser(args[0])
    try:
        parsed = parser.parse_args(args)
    except SystemExit as e:
        raise AssertionError(f"alexnet2012 {shlex.join(args)}: the parser refuses it") from e
    if parsed.command == "bench":
        return check_bench(parsed)
    if not hasattr(parsed, "overrides"):
        return
    config = getattr(parsed, "config", None)
    if config:
        assert (ROOT / config).is_file(), f"--config {config} does not exist"
    # with --resume or --from the run's own config is read; its overrides still have to be keys
    load_config(ROOT / config if config else None, parsed.overrides)


def check_bench(parsed: argparse.Namespace) -> None:
    """``alexnet2012 bench [data|norms] ...``: the rest parsed again as bench/command.py does."""
    from alexnet2012.bench import command

    words = parsed.args[1:] if parsed.args[:1] in (["data"], ["norms"]) else parsed.args
    again = argparse.ArgumentParser(prog="alexnet2012 bench")
    command._options(again)
    again.add_argument("words", nargs="*")
    try:
        parsed = again.parse_intermixed_args(words, namespace=parsed)
    except SystemExit as e:
        raise AssertionError(f"alexnet2012 bench {shlex.join(words)}: refused") from e
    unknown = set(parsed.executions.split(",")) - set(command.EXECUTIONS)
    assert not unknown, f"--executions: no execution {', '.join(sorted(unknown))}"
    load_config(ROOT / parsed.config if parsed.config else None, parsed.words)


def check_module(name: str) -> None:
    """``python -m alexnet2012.X.Y``: the module exists and runs as a program."""
    path = ROOT.joinpath(*name.split("."))
    file = path / "__main__.py" if path.is_dir() else path.with_suffix(".py")
    assert file.is_file(), f"python -m {name}: no module {file.relative_to(ROOT)}"
    assert "__main__" in file.read_text(), f"python -m {name}: {file} has no __main__ block"


def check_torchrun(args: list[str]) -> None:
    from torch.distributed.run import get_args_parser

    try:
        parsed = get_args_parser().parse_args(args)
    except SystemExit as e:
        raise AssertionError(f"torchrun {shlex.join(args)}: torchrun refuses it") from e
    script, rest = parsed.training_script, parsed.training_script_args
    if parsed.module:
        if script == "alexnet2012":
            return check_cli(rest)
        return check_module(script)
    assert (ROOT / script).is_file(), f"torchrun {script}: no such file"
    assert script in CLI_SCRIPTS, f"torchrun {script}: no check for this script"
    check_cli(rest)


def check_script(args: list[str]) -> None:
    """``bash launch/X.sh ARGS`` or ``sbatch [options] launch/slurm.sbatch ARGS``."""
    while args and args[0].startswith("-"):  # sbatch's own options
        args = args[1:]
    assert args, "no script"
    script, rest = args[0], args[1:]
    assert (ROOT / script).is_file(), f"{script}: no such file"
    if script in TRAIN_LAUNCHERS:
        check_cli(["train", *rest])


def check_command(line: str) -> None:
    words = words_of(line)
    assert words, f"an empty command: {line!r}"
    head, args = words[0], words[1:]
    if head == "alexnet2012":
        return check_cli(args)
    if head in ("python", "python3"):
        if args[:1] == ["-c"]:
            compile(args[1], "<python -c>", "exec")
            return None
        assert args[:1] == ["-m"] and len(args) > 1, f"{line!r}: python without -m or -c"
        if args[1] == "alexnet2012":
            return check_cli(args[2:])
        return check_module(args[1])
    if head == "torchrun":
        return check_torchrun(args)
    if head in ("bash", "sbatch"):
        return check_script(args)
    if any(tuple(words[: len(allowed)]) == allowed for allowed in ALLOWED):
        return
    raise AssertionError(f"{line!r}: no check for this command; add one to tests/test_readme.py")


CASES = [(page, line) for page in PAGES for line in bash_commands(page)]


@pytest.mark.parametrize(
    ("page", "line"), CASES, ids=[f"{p.relative_to(ROOT)}: {line[:60]}" for p, line in CASES]
)
def test_command_runs_as_written(page, line, monkeypatch):
    monkeypatch.chdir(ROOT)
    check_command(line)


def test_readme_is_a_short_entry_with_its_commands_first():
    lines = README.read_text().splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines"
    first = bash_commands(README)[:4]
    assert any(c.startswith("bash launch/test.sh") for c in first), first
    assert any(c.startswith("bash launch/demo.sh") for c in first), first
    assert any(c.startswith("alexnet2012 train --config configs/debug.yaml") for c in first), first


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files_that_exist(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to nothing: {broken}"


def test_the_check_refuses_a_broken_command(monkeypatch):
    monkeypatch.chdir(ROOT)
    broken = [
        "alexnet2012 train --config configs/nothing.yaml",
        "alexnet2012 train --config configs/debug.yaml train.no_such_key=1",
        "alexnet2012 train --config configs/debug.yaml --no-such-option",
        "alexnet2012 trian --config configs/debug.yaml",
        "torchrun --standalone --nproc_per_node=2 -m alexnet2012 train train.epochs=x",
        "bash launch/nothing.sh",
        "python -m alexnet2012.parallel.launcher",
        "sbatch --nodes=1 launch/slurm.sbatch --config configs/imagenet.yaml",
        "alexnet2012 bench --executions nothing",
        "make all",
    ]
    for line in broken:
        with pytest.raises((AssertionError, ValueError)):
            check_command(line)

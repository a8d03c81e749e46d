"""Every command's --help: exit 0, its examples each on a line of their own."""

import re

import pytest

from alexnet2012 import cli

COMMANDS = [["train"], ["summary"], ["prepare"], ["bench"], ["bench", "data"], ["compare"],
            ["kernels"], ["neighbours"], ["convert"]]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_keeps_examples_on_their_own_lines(command, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([*command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: alexnet2012 {' '.join(command)}" in out
    examples = [line for line in out.splitlines() if line.lstrip().startswith(
        ("alexnet2012 ", "torchrun "))]  # fmt: skip
    assert examples, out
    for line in examples:  # an example line holds one command, not a folded paragraph
        assert len(re.findall(r"(?<![\w/.-])alexnet2012 [a-z]", line)) == 1, line


def test_train_help_shows_what_a_resume_may_change_and_the_variant_form(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "alexnet2012 train --from runs/dbg/checkpoints/ckpt-00000040.pt run.dir=" in out
    assert "--from CKPT" in out and "refuses anything else" in out


def test_a_reader_that_left_early_ends_the_command_quietly():
    """`alexnet2012 summary ... | head -1`: the rest of the table goes nowhere, no error line,
    the status a shell gives a process its reader left (128 + SIGPIPE)."""
    import os
    import signal
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    argv = [sys.executable, "-m", "alexnet2012", "summary", "--config", "configs/debug.yaml"]
    done = subprocess.run(argv, stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert done.returncode == 128 + signal.SIGPIPE, done.stderr
    assert done.stderr == "", done.stderr


def test_a_broken_pipe_elsewhere_is_still_an_error(monkeypatch, capsys):
    """Only a closed standard output ends quietly: a pipe that breaks elsewhere (a worker's, a
    socket's) while stdout is open is one error line and status 2."""
    from alexnet2012.nets import summary

    def broken(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(summary, "layer_table", broken)
    assert cli.main(["summary", "--config", "configs/debug.yaml"]) == 2
    assert "alexnet2012 summary: error: [Errno 32] Broken pipe" in capsys.readouterr().err

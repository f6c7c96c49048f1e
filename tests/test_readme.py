"""The README as a user reads it: its Python example runs as written in an empty folder that
holds train.csv and test.csv, and every `digits ...` command it (or docs/cli.md) shows
exists with the options it uses (checked with the real parser, nothing run)."""
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from worker.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = (README, ROOT / "docs" / "cli.md")


def _blocks(path, lang):
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(), re.S | re.M)


def _command_lines(path):
    """Every line of the page's bash blocks that runs `digits` -> [str], comments dropped."""
    out = []
    for block in _blocks(path, "bash"):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("digits "):
                out.append(line)
    return out


def _commands(line):
    """One shown line -> the argv lists it stands for: `[--opt X]` loses its brackets and
    `digits worker | scheduler | flower` stands for three commands."""
    words = [w.strip("[]") for w in shlex.split(line)][1:]
    groups, current = [], []
    for w in words:
        if w == "|":
            groups.append(current)
            current = []
        else:
            current.append(w)
    groups.append(current)
    return groups


def _subparsers():
    action = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_the_pages_show_commands():
    assert len(_command_lines(README)) >= 10 and len(_command_lines(ROOT / "docs" / "cli.md")) >= 10


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_shown_exists_with_its_options(page):
    subs = _subparsers()
    for line in _command_lines(page):
        for argv in _commands(line):
            assert argv and argv[0] in subs, f"{page.name}: no command {argv[:1]} in: {line}"
            known = subs[argv[0]]._option_string_actions
            for word in argv[1:]:
                if word.startswith("-"):
                    assert word.split("=")[0] in known, f"{page.name}: `digits {argv[0]}` has no option {word}: {line}"


def test_the_readme_commands_parse_as_written():
    parser = build_parser()
    for line in _command_lines(README):
        argv = shlex.split(line)[1:]
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                a = parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"README: `{line}` does not parse: {err.getvalue().strip()}")
        assert a.func, line


@pytest.mark.integration
def test_the_python_example_runs_as_written(tmp_path, sample):
    from model.data.block import PIXEL_COLUMNS
    from model.data.samples import write_csv
    from worker.stack.broker import broker_reachable
    (code,) = _blocks(README, "python")
    write_csv(tmp_path / "train.csv", ["label", *PIXEL_COLUMNS],
              np.column_stack([sample["train_y"][:1000], sample["train_x"][:1000]]))  # (1000, 785)
    write_csv(tmp_path / "test.csv", PIXEL_COLUMNS, sample["test_x"][:200])  # (200, 784)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "200 predictions written to" in run.stdout and "SUCCESS" in run.stdout
    lines = (tmp_path / "submission.csv").read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == 201
    assert re.search(r"ImageId\s+Label\s+confidence", run.stdout)
    labels = np.array([int(x.split(",")[1]) for x in lines[1:]])
    assert (labels == sample["test_y"][:200]).mean() > 0.8  # a real model, not a constant
    # the temporary stack lived for the block only
    assert not broker_reachable(f"redis+socket://{tmp_path / '.digits' / 'redis.sock'}")

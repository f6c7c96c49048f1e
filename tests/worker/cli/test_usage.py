"""Every usage error of the `digits` command line exits 2 (README, "Exit codes"), says why in
one line after the command's usage, as argparse does for its own, and starts nothing."""
import json
import os
import shutil
import subprocess

import pytest

DIGITS = shutil.which("digits")

USAGE_ERRORS = [
    (["sweep", "status"], "needs the sweep id"),
    (["sweep", "cancel"], "needs the sweep id"),
    (["sweep", "list", "sweep-0123"], "takes no id"),
    (["sweep", "list", "--grid", "lr=0.1"], "--grid is for a new sweep"),
    (["sweep", "status", "sweep-0123", "--no-wait"], "--no-wait is for a new sweep"),
    (["sweep", "train.csv"], "give at least one --grid"),
    (["sweep", "train.csv", "extra", "--grid", "lr=0.1"], "unexpected argument 'extra'"),
    (["sweep", "train.csv", "--grid", "lr=fast"], "values must be float"),
    (["sweep", "train.csv", "--grid", "nosuch=1"], "unknown training option 'nosuch'"),
    (["sweep", "train.csv", "--grid", "lr"], "write NAME=V1,V2"),
    (["train", "train.csv", "--local"], "--local needs --out MODEL"),
    (["train", "train.csv", "--local", "--out", "m.npz", "--no-wait"], "--no-wait is for queue jobs"),
    (["predict", "t.csv", "--model", "m", "--out", "o.csv", "--local", "--job-id", "j"], "--job-id is for queue jobs"),
    (["predict", "t.csv", "--model", "m", "--out", "o.csv", "--local", "--no-wait", "--job-id", "j"],
     "--no-wait and --job-id are for queue jobs"),
    (["watch", "job-1", "--interval", "0"], "must be > 0"),
    (["up", "--idle-exit", "-5"], "must be > 0"),
    (["worker", "--queues", "predict,bogus"], "choose from predict, train"),
    (["worker", "--loglevel", "loud"], "invalid choice"),
    (["scheduler", "--loglevel", "loud"], "invalid choice"),
    (["status"], "the following arguments are required: job"),
    (["jobs", "--limit", "0"], "must be >= 1"),
    (["gc", "--older-than", "soon"], "age"),
    ([], None),  # no command: the help, and 2
]


@pytest.fixture()
def env(tmp_path):
    env = dict(os.environ, DIGITS_HOME=str(tmp_path / "home"), DIGITS_STORAGE=str(tmp_path / "storage"))
    for k in ("DIGITS_BROKER_URL", "DIGITS_RESULT_BACKEND"):
        env.pop(k, None)
    return env


@pytest.mark.parametrize("argv,reason", USAGE_ERRORS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_usage_error_exits_2_with_the_usage_and_one_line(argv, reason, env, tmp_path):
    r = subprocess.run([DIGITS, *argv], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (argv, r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    if reason is None:
        assert r.stdout.startswith("usage: digits")
    else:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ": error: " in ln]
        assert len(errors) == 1 and reason in errors[0], r.stderr
        assert lines[0].startswith(f"usage: digits {argv[0]}"), r.stderr
    assert not (tmp_path / "home" / "logs").exists()  # no stack was started for it


def test_a_usage_error_with_json_prints_it_as_json(env):
    r = subprocess.run([DIGITS, "sweep", "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert json.loads(r.stdout) == {"error": "digits sweep status needs the sweep id (see `digits sweep list`)",
                                    "exit_code": 2}


def test_a_bad_setting_or_unknown_id_is_not_a_usage_error(env):
    """Exit 1 stays for what the command line cannot tell: an unknown sweep, a bad option value."""
    r = subprocess.run([DIGITS, "sweep", "status", "sweep-0123456789abcdef"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "unknown sweep" in r.stderr, r.stderr
    r = subprocess.run([DIGITS, "sweep", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("no sweeps under"), r.stdout

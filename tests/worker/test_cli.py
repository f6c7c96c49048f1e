"""The real `digits` console script, run as a subprocess against the running test stack.

The `live` fixture records its stack in DIGITS_HOME/stack.json, so the commands here reuse
it instead of starting their own (the environment comes from the `stack_env` fixture).
"""
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from model import batch, checkpoint
from model.data import sources
from model.data.block import PIXEL_COLUMNS, TRAIN_COLUMNS
from model.data.samples import write_csv, write_sample
from tests.conftest import wait_for, write_test_csv

pytestmark = pytest.mark.integration

DIGITS = shutil.which("digits")
WAIT = 120


@pytest.fixture(scope="module")
def cli(live, stack_env):
    """run(*args) -> CompletedProcess of `digits ARGS` with the test stack's environment."""
    assert DIGITS, "the `digits` console script is not installed (pip install -e .)"
    env = dict(os.environ, **stack_env)

    def run(*args, timeout=WAIT, cwd=None):
        return subprocess.run([DIGITS, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
    run.env = env
    return run


@pytest.fixture(scope="module")
def files(sample, trained_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-data")
    big = d / "big.csv"
    body = "".join(",".join(map(str, r)) + "\n" for r in sample["test_x"].tolist())
    big.write_text(",".join(PIXEL_COLUMNS) + "\n" + body * 40)  # 20,000 rows
    return {"dir": d, "model": trained_model[1], "test": write_test_csv(d / "test.csv", sample["test_x"]),
            "big": str(big)}


def read_submission(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ImageId", "Label"]
    a = np.array(rows[1:], dtype=np.int64).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def assert_clean_failure(r, *, one_line=True):
    """Non-zero exit, no traceback, and the reason on one line of stderr."""
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1, r.stderr
    if one_line:
        assert lines == errors, r.stderr
    return errors[0]


# ----------------------------------------------------------------------------- queue commands

def test_predict_waits_and_writes_the_submission(cli, files, trained_model, sample, tmp_path):
    out = tmp_path / "sub.csv"
    r = cli("predict", files["test"], "--model", files["model"], "--out", out, "--chunk-rows", 73)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert f"wrote 500 predictions to {out}" in r.stdout
    ids, labels = read_submission(out)
    np.testing.assert_array_equal(ids, np.arange(1, 501))
    np.testing.assert_array_equal(labels, trained_model[0].predict(sample["test_x"])[0])


def test_no_wait_then_status_json_until_done(cli, files, tmp_path):
    out = tmp_path / "sub.csv"
    r = cli("predict", files["test"], "--model", files["model"], "--out", out, "--chunk-rows", 50, "--no-wait")
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip().splitlines()[-1]
    assert job_id.startswith("predict-")
    deadline = time.time() + WAIT
    while True:
        s = cli("status", job_id, "--json")
        assert s.returncode == 0, s.stderr
        st = json.loads(s.stdout)  # exactly one JSON object
        assert {"state", "progress", "output"} <= set(st)
        assert st["job_id"] == job_id and st["output"] == str(out)
        assert st["progress"]["chunks"] == 10
        if st["state"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            break
        assert st["state"] in ("PENDING", "PROGRESS")
        assert time.time() < deadline, st
        time.sleep(0.2)
    assert st["state"] == "SUCCESS"
    assert (st["rows_ok"], st["rows_bad"]) == (500, 0)
    assert st["progress"]["fraction"] == 1.0
    ids, _ = read_submission(out)
    np.testing.assert_array_equal(ids, np.arange(1, 501))

    text = cli("status", job_id)
    assert text.returncode == 0 and "SUCCESS" in text.stdout and "rows_ok: 500" in text.stdout


def test_cancel_a_running_job(cli, files, tmp_path):
    out = tmp_path / "sub.csv"
    r = cli("predict", files["big"], "--model", files["model"], "--out", out, "--chunk-rows", 50, "--no-wait")
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip().splitlines()[-1]
    c = cli("cancel", job_id)
    assert c.returncode == 0, c.stderr
    assert "cancel requested" in c.stdout, f"the job ended before it was cancelled: {c.stdout}"
    deadline = time.time() + WAIT
    while True:
        st = json.loads(cli("status", job_id, "--json").stdout)
        if st["state"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            break
        assert st["state"] in ("PENDING", "PROGRESS", "CANCELLING")
        assert time.time() < deadline, st
        time.sleep(0.2)
    assert st["state"] == "CANCELLED"
    assert cli("status", job_id).returncode == 1  # a cancelled job is not a success
    assert st["rows_skipped"] > 0
    assert st["rows_ok"] + st["rows_bad"] + st["rows_skipped"] == 20000
    ids, _ = read_submission(out)
    assert len(ids) == st["rows_ok"] and len(set(ids.tolist())) == len(ids)

    again = cli("cancel", job_id)
    assert again.returncode == 0 and "already ended" in again.stdout


# ----------------------------------------------------------------------------- usage

def test_help_of_every_subcommand(cli):
    from worker.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    commands = sorted(sub.choices)
    assert {"predict", "status", "cancel", "train", "up", "watch"} <= set(commands)
    procs = {name: subprocess.Popen([DIGITS, *argv, "--help"], env=cli.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, argv in [("digits", [])] + [(c, [c]) for c in commands]}
    for name, p in procs.items():
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, (name, err)
        assert out.startswith("usage: digits"), (name, out[:200])
        assert "Traceback" not in err


def test_missing_model_option(cli, files, tmp_path):
    r = cli("predict", files["test"], "--out", tmp_path / "o.csv")
    line = assert_clean_failure(r, one_line=False)  # argparse shows the usage, then the error
    assert r.returncode == 2
    assert "--model" in line


@pytest.mark.parametrize("local", [False, True], ids=["queue", "local"])
def test_nonexistent_input(cli, files, tmp_path, local):
    missing = tmp_path / "nope.csv"
    r = cli("predict", missing, "--model", files["model"], "--out", tmp_path / "o.csv", *(["--local"] * local))
    line = assert_clean_failure(r)
    assert str(missing) in line and "no such file" in line
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("local", [False, True], ids=["queue", "local"])
def test_nonexistent_model(cli, files, tmp_path, local):
    missing = tmp_path / "no-model.npz"
    r = cli("predict", files["test"], "--model", missing, "--out", tmp_path / "o.csv", *(["--local"] * local))
    line = assert_clean_failure(r)
    assert str(missing) in line
    assert not (tmp_path / "o.csv").exists()


def test_status_and_cancel_of_unknown_job(cli):
    for cmd in ("status", "cancel"):
        line = assert_clean_failure(cli(cmd, "no-such-job"))
        assert "unknown job" in line


# ----------------------------------------------------------------------------- in-process commands

def test_predict_local_reports_bad_records(cli, sample, trained_model, tmp_path):
    x = sample["test_x"][:196]
    lines = [",".join(map(str, r)) for r in x.tolist()]
    broken = {5: ",".join(["1"] * 700),  # wrong column count
              50: ",".join(["0"] * 9 + ["x"] + ["0"] * 774),  # non-numeric
              120: ",".join(["0"] * 783 + ["256"]),  # out of range
              199: "garbage"}  # 1-based data row -> line
    for row in sorted(broken):
        lines.insert(row - 1, broken[row])
    assert len(lines) == 200
    src = tmp_path / "broken.csv"
    src.write_text(",".join(PIXEL_COLUMNS) + "\n" + "\n".join(lines) + "\n")
    out = tmp_path / "out.csv"
    r = cli("predict", src, "--model", trained_model[1], "--out", out, "--local", "--chunk-rows", 64)
    assert r.returncode == 0, r.stderr
    assert "wrote 196 predictions" in r.stdout
    assert "4 bad records skipped" in r.stdout
    ids, labels = read_submission(out)
    np.testing.assert_array_equal(ids, [i for i in range(1, 201) if i not in broken])
    np.testing.assert_array_equal(labels, trained_model[0].predict(x)[0])
    with open(batch.errors_ref(out), newline="") as f:
        errs = list(csv.reader(f))
    assert errs[0] == ["row", "reason"]
    assert [int(e[0]) for e in errs[1:]] == sorted(broken)
    reasons = [e[1] for e in errs[1:]]
    assert reasons == ["expected 784 values, found 700", "non-numeric value 'x' in pixel9",
                       "value 256 in pixel783 is outside 0..255", "expected 784 values, found 1"]


def test_train_local_writes_a_model(cli, sample, tmp_path):
    data = tmp_path / "train.csv"
    write_csv(data, TRAIN_COLUMNS, np.column_stack([sample["train_y"], sample["train_x"]]))
    r = cli("train", data, "--local", "--out", "m.npz", "--epochs", 2, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "model written to m.npz" in r.stdout
    # the bar's last frame shows the score the result line gives (it showed the epoch before)
    trained = next(line for line in r.stdout.splitlines() if line.startswith("trained "))
    final = re.search(r"val_accuracy (\d\.\d{4})$", trained).group(1)
    assert re.findall(r"val_accuracy (\d\.\d{4})", r.stderr)[-1] == final
    m = checkpoint.load_model(tmp_path / "m.npz")
    labels, _ = m.predict(sample["test_x"])
    assert (labels == sample["test_y"]).mean() > 0.7  # 2 epochs on 2,500 digits already learn


def test_bad_chunk_rows_and_unwritable_out(cli, files, tmp_path):
    r = cli("predict", files["test"], "--model", files["model"], "--out", tmp_path / "o.csv", "--chunk-rows", 0)
    assert "--chunk-rows" in assert_clean_failure(r, one_line=False) and r.returncode == 2
    folder = tmp_path / "a-folder"
    folder.mkdir()
    r = cli("predict", files["test"], "--model", files["model"], "--out", folder, "--local")
    assert f"--out {folder} is a folder" in assert_clean_failure(r)  # checked before any work


def test_status_without_a_running_broker_reads_storage(cli, stack_env, tmp_path):
    """A job left unfinished when its stack went away: status still answers, from storage,
    within 2 s, says that no broker answers and does not call the job running (exit 3)."""
    from tasks import jobfiles
    job_id = "predict-orphaned"
    jobfiles.write_json(jobfiles.ref(stack_env["DIGITS_STORAGE"], job_id, "job.json"),
                    {"job_id": job_id, "kind": "predict", "chunks": 3, "output": "/nowhere/out.csv"})
    env = dict(cli.env, DIGITS_HOME=str(tmp_path / "no-stack-here"))  # same storage, no stack.json
    t0 = time.monotonic()
    r = subprocess.run([DIGITS, "status", job_id, "--json"], env=env, capture_output=True, text=True,
                       timeout=WAIT)
    assert time.monotonic() - t0 < 2
    assert r.returncode == 3, r.stderr
    st = json.loads(r.stdout)
    assert (st["state"], st["last_state"], st["broker_reachable"]) == ("STALLED", "PENDING", False)
    assert st["progress"] == {"chunks_done": 0, "chunks": 3, "fraction": 0.0}


# ----------------------------------------------------------------------------- inputs that used to break a job

def _png_claiming(width, height):
    from tests.model.data.test_sources import png_claiming
    return png_claiming(width, height)


@pytest.mark.parametrize("local", [True, False])
def test_folder_with_a_bomb_and_an_odd_name_gives_the_good_digits(cli, sample, trained_model, tmp_path, local):
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(sample["test_x"][i].reshape(28, 28), "L").save(folder / f"d{i}.png")
    (folder / "bomb.png").write_bytes(_png_claiming(20000, 20000)[:300])  # 287-byte class: header only
    with open(os.path.join(os.fsencode(str(folder)), b"\xff-odd.png"), "wb") as f:
        Image.fromarray(sample["test_x"][5].reshape(28, 28), "L").save(f, "PNG")
    out = tmp_path / "out.csv"
    r = cli("predict", folder, "--model", trained_model[1], "--out", out, "--chunk-rows", 3,
            *(["--local"] if local else []))
    assert r.returncode == 0, r.stderr
    assert "wrote 6 predictions" in r.stdout and "1 bad records skipped" in r.stdout
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    assert [row[0] for row in rows] == [f"d{i}.png" for i in range(5)] + ["\\xff-odd.png"]
    assert [int(row[1]) for row in rows] == trained_model[0].predict(sample["test_x"][:6])[0].tolist()
    with open(batch.errors_ref(out), newline="") as f:
        assert list(csv.reader(f))[1:] == [["bomb.png", "image is 20000x20000, over the limit of 16,777,216 pixels"]]


def test_a_12000x12000_image_costs_little_memory(cli, trained_model, tmp_path):
    folder = tmp_path / "huge"
    folder.mkdir()
    (folder / "huge.png").write_bytes(_png_claiming(12000, 12000))
    # VmHWM: this process's own peak (getrusage's maxrss would carry the forking parent's over exec)
    script = ("import sys; from worker.cli import main; rc = main(sys.argv[1:]); "
              "print([ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0]); "
              "sys.exit(rc)")
    out = tmp_path / "out.csv"
    r = subprocess.run([sys.executable, "-c", script, "predict", str(folder), "--model", trained_model[1],
                        "--out", str(out), "--local"], env=cli.env, capture_output=True, text=True, timeout=WAIT)
    assert r.returncode == 1, r.stderr  # nothing predicted is no success
    assert "digits: failed: no predictions: all 1 records are bad" in r.stderr
    peak_mb = int(r.stdout.split()[-1]) / 1024
    assert peak_mb < 250, f"peak RSS {peak_mb:.0f} MB"
    assert "0 predictions" in r.stdout and "1 bad records" in r.stdout


def test_a_bad_model_file_is_refused_before_anything_starts(cli, files, trained_model, tmp_path):
    m = checkpoint.load_model(trained_model[1])
    arrays = dict(m.params, mean=m.mean, std=m.std)
    arrays["W1"] = arrays["W1"].astype("U4")  # the right shape, not numbers
    bad = tmp_path / "bad.npz"
    np.savez(bad, meta=np.array(json.dumps(m.meta)), **arrays)
    for model, reason in ((bad, "W1 holds <U4 values, not floating point"), (files["test"], "not an .npz file")):
        home = tmp_path / "home"
        env = dict(cli.env, DIGITS_HOME=str(home), DIGITS_STORAGE=str(tmp_path / "st"))
        r = subprocess.run([DIGITS, "predict", files["test"], "--model", str(model), "--out", str(tmp_path / "o.csv")],
                           env=env, capture_output=True, text=True, timeout=WAIT)
        line = assert_clean_failure(r)
        assert "not a digits model file" in line and reason in line and "pickle" not in line
        assert not (home / "logs").exists()  # no stack was started
        assert not (tmp_path / "st" / "jobs").exists()  # nothing was queued


def test_a_partial_job_exits_non_zero_with_one_line(cli, files, tmp_path):
    from tasks import jobfiles
    job_id = f"partial-{os.getpid()}"
    os.makedirs(jobfiles.chunk_ref(cli.env["DIGITS_STORAGE"], job_id, 1))  # chunk 1 can't be stored
    out = tmp_path / "out.csv"
    r = cli("predict", files["test"], "--model", files["model"], "--out", out, "--chunk-rows", 100,
            "--job-id", job_id)
    assert r.returncode == 1, (r.stdout, r.stderr)
    partial = [ln for ln in r.stderr.splitlines() if ln.startswith("digits: partial:")]
    p = sources.open_source(files["test"], 100)
    lost = list(p.names(1, p.length(0), p.length(1)))
    assert len(partial) == 1 and f"job {job_id}" in partial[0]
    assert f"chunk(s) failed (1), {len(lost)} records" in partial[0]
    assert jobfiles.chunk_ref(cli.env["DIGITS_STORAGE"], job_id, 1) in partial[0]
    assert f"wrote {500 - len(lost)} predictions" in r.stdout
    ids, _ = read_submission(out)
    np.testing.assert_array_equal(ids, [i for i in range(1, 501) if i not in lost])


# ----------------------------------------------------------------------------- jobs, gc and the command line's rough edges

def test_jobs_lists_recent_jobs_also_with_the_broker_down(cli, files, tmp_path):
    out = tmp_path / "sub.csv"
    r = cli("predict", files["test"], "--model", files["model"], "--out", out, "--chunk-rows", 100, "--no-wait")
    job_id = r.stdout.strip().splitlines()[-1]
    assert cli("watch", job_id, "--interval", 0.1).returncode == 0
    listed = json.loads(cli("jobs", "--json").stdout)
    mine = next(e for e in listed if e["job_id"] == job_id)
    assert listed[0]["job_id"] == job_id  # newest first
    assert (mine["kind"], mine["state"], mine["rows_in"], mine["output"], mine["chunks"]) == \
        ("predict", "SUCCESS", 500, str(out), 5)
    assert mine["submitted_at"].endswith("+00:00") and mine["finished_at"].endswith("+00:00")  # ISO-8601 UTC
    assert mine["duration_seconds"] >= 0
    assert all(e["kind"] == "train" for e in json.loads(cli("jobs", "--json", "--kind", "train").stdout))
    assert all(e["state"] == "CANCELLED" for e in json.loads(cli("jobs", "--json", "--state", "CANCELLED").stdout))
    assert len(json.loads(cli("jobs", "--json", "--limit", 1).stdout)) == 1
    assert json.loads(cli("jobs", "--json", "--since", "0s").stdout) == []
    text = cli("jobs", "--limit", 3)
    assert text.returncode == 0 and text.stdout.startswith("JOB ") and job_id in text.stdout
    # the same storage with no broker anywhere: the listing reads storage only
    env = dict(cli.env, DIGITS_HOME=str(tmp_path / "no-stack-here"))
    r = subprocess.run([DIGITS, "jobs", "--json"], env=env, capture_output=True, text=True, timeout=WAIT)
    assert r.returncode == 0 and job_id in {e["job_id"] for e in json.loads(r.stdout)}
    assert not (tmp_path / "no-stack-here" / "logs").exists()  # and started nothing
    assert cli("jobs", "--state", "RUNNING").returncode == 2  # not a state


def test_gc_removes_what_old_jobs_leave_and_says_so(cli, files, tmp_path):
    from tasks import jobfiles
    out = tmp_path / "sub.csv"
    r = cli("predict", files["test"], "--model", files["model"], "--out", out, "--chunk-rows", 100, "--no-wait")
    job_id = r.stdout.strip().splitlines()[-1]
    assert cli("watch", job_id, "--interval", 0.1).returncode == 0
    root = cli.env["DIGITS_STORAGE"]
    assert jobfiles.chunks_done(root, job_id) == 5
    dry = json.loads(cli("gc", "--older-than", "0s", "--dry-run", "--json").stdout)
    assert any(x["job_id"] == job_id and x["what"] == "chunk files" for x in dry["removed"])
    assert jobfiles.chunks_done(root, job_id) == 5 and dry["redis_checked"]
    r = cli("gc", "--older-than", "0s")
    assert r.returncode == 0, r.stderr
    assert f"removed chunk files of {job_id}" in r.stdout and "freed" in r.stdout.splitlines()[-1]
    assert jobfiles.chunks_done(root, job_id) == 0 and out.exists()  # the user's --out stays
    assert cli("status", job_id).returncode == 0  # and the job is still known
    assert cli("models", "--json").returncode == 0 and "promoted" not in r.stdout


def test_status_and_watch_of_a_training_job_say_whether_it_was_promoted(cli, sample, tmp_path):
    data = tmp_path / "train.csv"
    write_csv(data, TRAIN_COLUMNS, np.column_stack([sample["train_y"], sample["train_x"]]))
    name = f"promo{os.getpid()}"
    r = cli("train", data, "--name", name, "--recipe", "faithful", "--epochs", 2)
    assert r.returncode == 0, r.stderr
    assert f"model {name} version 1: val_accuracy" in r.stdout
    assert "promoted to production (first version: no production model yet)" in r.stdout
    job_id = next(e["job_id"] for e in json.loads(cli("jobs", "--json", "--kind", "train").stdout)
                  if e["model"] == name)
    st = cli("status", job_id)
    assert "promoted to production" in st.stdout and "progress: epoch 2/2" in st.stdout
    assert "promoted to production" in cli("watch", job_id).stdout
    js = json.loads(cli("status", job_id, "--json").stdout)
    assert js["submitted_at"].endswith("+00:00") and js["finished_at"].endswith("+00:00")
    assert "Traceback" not in r.stderr and " eta " not in r.stderr.split("batches")[0]  # none on a first frame
    assert not re.search(r"eta \d+h", r.stderr)  # and never hours for a run of seconds


def test_rough_edges_of_the_command_line(cli, files, tmp_path):
    # an unknown model name among registered ones is an error naming them
    r = cli("models", "nosuch")
    assert r.returncode == 1 and "no model named 'nosuch'" in r.stderr
    assert json.loads(cli("models", "nosuch", "--json").stdout)["error"].startswith("no model named")
    # retraining half configured is an error, not "retrain digits from None"
    env = dict(cli.env, DIGITS_RETRAIN_CRON="0 3 * * *")
    env.pop("DIGITS_RETRAIN_DATA", None)
    r = subprocess.run([DIGITS, "schedule"], env=env, capture_output=True, text=True, timeout=WAIT)
    assert r.returncode == 1 and "DIGITS_RETRAIN_DATA" in r.stderr and "None" not in r.stdout
    # --json prints JSON, errors included
    r = cli("status", "no-such-job", "--json")
    assert r.returncode == 1 and "unknown job" in json.loads(r.stdout)["error"]
    # an unknown job's watch fails before drawing any bar
    r = cli("watch", "bogus-id")
    assert r.returncode == 1 and "unknown job" in r.stderr and "%|" not in r.stderr
    # quiet on a broken pipe, also mid-run (a broken pipe is a ConnectionError: it once read as the broker's)
    for command in ("jobs --json", f"train {files['dir'] / 'nope.csv'} --help", "schedule --json"):
        p = subprocess.Popen(f"{DIGITS} {command} | head -c 1", shell=True, env=cli.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=WAIT)
        assert len(out) == 1 and err == "", (command, err)


def test_training_on_an_unlabeled_file_fails_before_any_stack_starts(cli, files, tmp_path):
    home = tmp_path / "fresh-home"
    env = dict(cli.env, DIGITS_HOME=str(home), DIGITS_STORAGE=str(tmp_path / "st"))
    r = subprocess.run([DIGITS, "train", files["test"]], env=env, capture_output=True, text=True, timeout=WAIT)
    line = assert_clean_failure(r)
    assert "has no label column" in line and "DataError" not in line
    assert not (home / "logs").exists() and not (tmp_path / "st" / "jobs").exists()


def test_every_command_has_an_example_and_every_option_a_help(cli):
    from worker.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {"jobs", "gc"} <= set(sub.choices)
    for name, sp in sub.choices.items():
        assert "example:\n  digits" in sp.epilog or "example:\n  DIGITS_" in sp.epilog, name
        for action in sp._actions:
            assert action.help, (name, action.dest)
        assert "(default: None)" not in sp.format_help() and "(default: False)" not in sp.format_help(), name


def test_status_of_an_ended_job_imports_no_numpy_celery_or_redis(cli, files, tmp_path):
    """`digits status` of an ended job answers from storage alone (fast start: no NumPy,
    Celery, Redis, pandas or PIL imported); a running job's status still asks the broker."""
    r = cli("predict", files["test"], "--model", files["model"], "--out", tmp_path / "sub.csv", "--no-wait")
    assert r.returncode == 0, r.stderr
    job = r.stdout.split()[-1]
    assert cli("watch", job, "--interval", "0.1").returncode == 0
    script = ("import sys; from worker.cli import main; rc = main(sys.argv[1:]); "
              "print('HEAVY', [m for m in ('numpy', 'celery', 'redis', 'kombu', 'pandas', 'PIL') if m in sys.modules]); "
              "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", script, "status", job], env=cli.env, capture_output=True, text=True,
                       timeout=WAIT)
    assert r.returncode == 0, r.stderr
    assert "SUCCESS" in r.stdout and "HEAVY []" in r.stdout, r.stdout


def test_the_program_exits_with_the_command_s_code_and_its_output_flushed(cli, files, tmp_path):
    """`digits` ends its process without the interpreter's teardown: stdout, stderr and the
    exit code must all still be there, also when stdout is a pipe."""
    out = tmp_path / "sub.csv"
    r = cli("predict", files["test"], "--model", files["model"], "--out", out)
    assert r.returncode == 0 and r.stdout.strip().endswith(f"wrote 500 predictions to {out}"), (r.stdout, r.stderr)
    assert "rows in" in r.stderr
    r = cli("status", "no-such-job")
    assert r.returncode == 1 and "unknown job" in r.stderr
    r = cli("status", "no-such-job", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["exit_code"] == 1


@pytest.mark.parametrize("command", ["predict", "train"])
def test_a_submission_to_a_broker_that_never_answers_gives_up_naming_the_job(command, cli, files, tmp_path):
    """No Redis at the configured broker (a socket nobody serves) for longer than
    DIGITS_BROKER_OUTAGE: one line that the broker is unreachable, then one error line naming
    it and the job id to send again; exit 3, no traceback, no output."""
    dead = f"redis+socket://{tmp_path}/nobody.sock"
    env = dict(cli.env, DIGITS_BROKER_URL=dead, DIGITS_RESULT_BACKEND=dead, DIGITS_BROKER_OUTAGE="1",
               DIGITS_STORAGE=str(tmp_path / "storage"))
    sample = write_sample(str(tmp_path / "sample"), images=False)
    args = {"predict": ["predict", files["test"], "--model", files["model"], "--out", tmp_path / "out.csv"],
            "train": ["train", sample["train"], "--epochs", "1"]}[command]
    r = subprocess.run([DIGITS, *map(str, args)], env=env, capture_output=True, text=True, timeout=WAIT)
    assert r.returncode == 3, (r.stdout, r.stderr)
    error = assert_clean_failure(r, one_line=False)
    assert "nobody.sock" in error and "unreachable for more than 1s" in error, error
    job_id = re.search(r"--job-id (\S+)", error).group(1)
    assert job_id.startswith(command), error
    said = [ln for ln in r.stderr.splitlines() if "reconnecting" in ln]
    assert len(said) == 1 and not (tmp_path / "out.csv").exists(), r.stderr


def test_a_second_command_beside_another_s_own_stack_is_told_what_to_do(cli, files, tmp_path):
    """Without `digits up`, a command runs a stack of its own under DIGITS_HOME; a second command
    meanwhile is refused in one line that says whose it is and what to do (exit 1, no
    traceback), and the first one ends undisturbed."""
    import signal
    home = tmp_path / "home"
    env = dict(cli.env, DIGITS_HOME=str(home), DIGITS_STORAGE=str(home / "storage"))
    sample = write_sample(str(tmp_path / "sample"), images=False)
    first = subprocess.Popen([DIGITS, "train", sample["train"], "--epochs", "40", "--out", tmp_path / "m.npz"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: first.poll() is not None or (home / "stack.json").exists(), 90,
                 "the first command's stack")
        assert first.poll() is None, first.communicate()
        r = subprocess.run([DIGITS, "predict", files["test"], "--model", files["model"], "--out",
                            tmp_path / "o.csv"], env=env, capture_output=True, text=True, timeout=WAIT)
        assert r.returncode == 1, (r.stdout, r.stderr)
        error = assert_clean_failure(r, one_line=False)
        assert f"another digits command (pid {first.pid})" in error and "digits up" in error, error
        assert not (tmp_path / "o.csv").exists()
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGINT)  # Ctrl-C: its stack stops with it
        out, err = first.communicate(timeout=WAIT)
    assert "Traceback" not in err, err

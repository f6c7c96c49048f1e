"""`digits jobs`, `status` and `sweep list` on the live stack: sweeps can be found again,
job lines name their sweep and agree with the registry once the sweep promoted its best run,
every output is shown the same way (a full path), and an ended job shows no ETA."""
import json
import os
import re

import numpy as np
import pytest

from model.data.block import TRAIN_COLUMNS
from model.data.samples import write_csv
from tasks import jobfiles, sweep
from tests.conftest import wait_for
from tests.worker.test_cli import cli, files  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def train_csv(sample, tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep-data") / "train.csv"
    write_csv(path, TRAIN_COLUMNS, np.column_stack([sample["train_y"], sample["train_x"]]))
    return str(path)


@pytest.fixture(scope="module")
def ended_sweep(cli, train_csv):  # noqa: F811
    """A sweep of two runs that ended, and its model's name -> (status dict, name)."""
    name = f"listed{os.getpid()}"
    r = cli("sweep", train_csv, "--name", name, "--recipe", "faithful", "--grid", "epochs=1,2", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), name


def test_sweep_list_finds_a_sweep_again(cli, ended_sweep):  # noqa: F811
    st, name = ended_sweep
    listed = json.loads(cli("sweep", "list", "--json").stdout)
    mine = next(e for e in listed if e["sweep_id"] == st["sweep_id"])
    assert (mine["name"], mine["state"], mine["runs"], mine["runs_ended"]) == (name, "SUCCESS", 2, 2)
    assert (mine["best_version"], mine["best_val_accuracy"]) == (st["best"]["version"], st["best"]["val_accuracy"])
    assert mine["promoted"] is True and mine["submitted_at"].endswith("+00:00")
    text = cli("sweep", "list")
    assert text.returncode == 0 and text.stdout.startswith("SWEEP ")
    line = next(ln for ln in text.stdout.splitlines() if ln.startswith(st["sweep_id"]))
    assert re.search(rf"{name}\s+SUCCESS\s+2/2 ended\s+v{st['best']['version']} 0\.\d{{4}}\s+yes\s", line), line


def test_job_lines_name_their_sweep_and_agree_with_the_registry(cli, ended_sweep):  # noqa: F811
    st, name = ended_sweep
    runs = json.loads(cli("jobs", "--sweep", st["sweep_id"], "--json").stdout)
    assert sorted(e["job_id"] for e in runs) == sorted(r["job_id"] for r in st["runs"])
    assert all(e["sweep"] == st["sweep_id"] and e["kind"] == "train" for e in runs)
    production = {v["version"] for v in json.loads(cli("models", name, "--json").stdout)
                  if "production" in v.get("aliases", [])}
    assert production == {st["best"]["version"]}
    for e in runs:  # promoted exactly where the registry says production
        assert e["promoted"] is (e["version"] in production), e
    text = cli("jobs", "--sweep", st["sweep_id"]).stdout
    assert text.split("\n")[0].split()[6] == "SWEEP"
    best_line = next(ln for ln in text.splitlines() if ln.startswith(st["best"]["job_id"]))
    assert " promoted " in best_line and "not promoted" not in best_line and st["sweep_id"] in best_line
    other = next(r["job_id"] for r in st["runs"] if r["job_id"] != st["best"]["job_id"])
    assert "not promoted" in next(ln for ln in text.splitlines() if ln.startswith(other))
    best_status = cli("status", st["best"]["job_id"]).stdout
    assert f"promoted to production (best of sweep {st['sweep_id']}" in best_status
    assert f"version {st['best']['version']} was the best of sweep" in cli("status", other).stdout


def test_every_output_is_shown_as_a_full_path(cli, files, ended_sweep, tmp_path):  # noqa: F811
    out = tmp_path / "sub.csv"
    r = cli("predict", files["test"], "--model", files["model"], "--out", out, "--chunk-rows", 250)
    assert r.returncode == 0, r.stderr
    listed = json.loads(cli("jobs", "--json").stdout)
    assert {e["kind"] for e in listed} == {"predict", "train"}
    for e in listed:
        assert os.path.isabs(e["output"]), e
    by_id = {e["job_id"]: e for e in listed}
    st, name = ended_sweep
    best = by_id[st["best"]["job_id"]]
    assert best["output"].startswith(os.path.join(cli.env["DIGITS_STORAGE"], "models", name))
    status = json.loads(cli("status", st["best"]["job_id"], "--json").stdout)
    assert status["output"] == best["output"]
    text = cli("jobs", "--limit", 50).stdout
    for line in text.splitlines()[1:]:
        assert line.rstrip().split("  ")[-1].strip().startswith("/"), line


def test_a_sweep_in_progress_is_listed_with_its_state_then_cancelled(cli, train_csv):  # noqa: F811
    r = cli("sweep", train_csv, "--name", f"inflight{os.getpid()}", "--recipe", "plain", "--grid", "seed=1,2",
            "--grid", "epochs=300", "--no-wait")
    assert r.returncode == 0, r.stderr
    sweep_id = r.stdout.split()[-1]

    def listed():
        return next((e for e in json.loads(cli("sweep", "list", "--json").stdout) if e["sweep_id"] == sweep_id), None)

    first = listed()
    assert first["state"] in ("PENDING", "PROGRESS") and first["runs_ended"] == 0 and first["promoted"] is None
    root = cli.env["DIGITS_STORAGE"]
    record = sweep.read_sweep(root, sweep_id)
    wait_for(lambda: any(jobfiles.read_json(jobfiles.ref(root, j, "progress.json")) for j in record["jobs"]), 120,
             "a run of the sweep to start")
    assert listed()["state"] == "PROGRESS"
    assert cli("sweep", "cancel", sweep_id).returncode == 0
    assert listed()["state"] in ("CANCELLING", "CANCELLED")
    wait_for(lambda: listed()["state"] == "CANCELLED", 120, "the sweep to end cancelled")
    line = next(ln for ln in cli("sweep", "list").stdout.splitlines() if ln.startswith(sweep_id))
    assert re.search(r"CANCELLED\s+2/2 ended\s+-\s+-\s", line), line
    # a run stopped early: its last progress update still had an ETA, its status shows none
    last = {j: jobfiles.read_json(jobfiles.ref(root, j, "progress.json")) or {} for j in record["jobs"]}
    stale = [j for j, p in last.items() if p.get("eta_seconds") is not None]
    assert stale, last
    for job_id in stale:
        text = cli("status", job_id)
        assert text.returncode == 1 and "progress: epoch " in text.stdout and " eta " not in text.stdout, text.stdout
        assert "eta_seconds" not in json.loads(cli("status", job_id, "--json").stdout)["progress"]
        watched = cli("watch", job_id)
        assert watched.returncode == 1 and " eta " not in watched.stderr, watched.stderr

"""Sweeps on a real stack with two train worker processes, driven through the CLI."""
import dataclasses
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from model.data.block import TRAIN_COLUMNS
from model.registry.versions import Registry
from model.data.samples import write_csv
from tasks import sweep
from tests.conftest import wait_for

pytestmark = pytest.mark.integration
DIGITS = shutil.which("digits")


@pytest.fixture(scope="module")
def two_trainers(live, sample, tmp_path_factory):
    """A stack of its own (two train worker processes) -> run(*args), its settings, a train CSV."""
    from worker import settings
    from celery import current_app
    from worker.app import configure
    from worker.stack.embedded import Stack
    old_broker = current_app.conf.broker_url  # the live stack's (the app the shared tasks follow)
    home = tmp_path_factory.mktemp("sweep-home")
    s = dataclasses.replace(settings.load(), home=home, storage=str(home / "storage"), train_concurrency=2,
                            predict_concurrency=1)
    env = dict(os.environ, DIGITS_HOME=str(home), DIGITS_STORAGE=s.storage, DIGITS_TRAIN_CONCURRENCY="2")
    data = home / "train.csv"
    write_csv(data, TRAIN_COLUMNS, np.column_stack([sample["train_y"], sample["train_x"]]))
    stack = Stack(s, record=True, log=lambda *a: None).start()

    def run(*args, timeout=240):
        return subprocess.run([DIGITS, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout)
    try:
        yield run, s, str(data)
    finally:
        stack.stop()
        configure(old_broker)  # Stack.start pointed the shared app at this stack


def test_a_sweep_fans_out_over_two_trainers_and_offers_its_best(two_trainers):
    run, s, data = two_trainers
    r = run("sweep", data, "--name", "swept", "--recipe", "plain", "--grid", "lr=0.01,0.1",
            "--grid", "seed=1,2", "--grid", "epochs=4", "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["state"] == "SUCCESS" and len(st["runs"]) == 4
    assert [r_["config"] for r_ in st["runs"]] == [{"lr": lr, "seed": seed, "epochs": 4}
                                                   for lr in (0.01, 0.1) for seed in (1, 2)]
    assert all(r_["state"] == "SUCCESS" and r_["version"] for r_ in st["runs"])
    best = max(st["runs"], key=lambda r_: r_["val_accuracy"])
    assert st["best"]["job_id"] == best["job_id"]
    reg = Registry(s.storage)
    assert reg.aliases("swept")["production"] == best["version"]  # the gate took the best
    for r_ in st["runs"]:
        promo = reg.metadata("swept", r_["version"])["promotion"]
        if r_["job_id"] == best["job_id"]:
            assert promo["promoted"] and promo["reason"].startswith(f"best of sweep {st['sweep_id']}")
        else:
            assert promo["deferred"] and not promo["promoted"]
    # the runs ran side by side on the two train processes
    from tasks import jobfiles
    spans = sorted((m["started_at"], m["finished_at"]) for m in
                   (jobfiles.read_manifest(s.storage, r_["job_id"]) for r_ in st["runs"]))
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans
    text = run("sweep", "status", st["sweep_id"])
    assert text.returncode == 0 and "promoted to production" in text.stdout and " *" in text.stdout
    assert text.stdout.count("SUCCESS") == 5  # the sweep and its four runs


def test_cancelling_a_sweep_stops_every_run(two_trainers):
    run, s, data = two_trainers
    r = run("sweep", data, "--name", "cancelled", "--recipe", "plain", "--grid", "seed=1,2,3",
            "--grid", "epochs=300", "--no-wait")
    assert r.returncode == 0, r.stderr
    sweep_id = r.stdout.split()[-1]
    record = sweep.read_sweep(s.storage, sweep_id)

    def running():
        from tasks import jobfiles
        return any(jobfiles.read_json(jobfiles.ref(s.storage, j, "progress.json")) for j in record["jobs"])
    wait_for(running, 120, "a run to start")
    c = run("sweep", "cancel", sweep_id)
    assert c.returncode == 0 and "cancel requested" in c.stdout
    wait_for(lambda: sweep.read_manifest(s.storage, sweep_id), 120, "the sweep to end")
    st = json.loads(run("sweep", "status", sweep_id, "--json").stdout)
    assert st["state"] == "CANCELLED"
    assert all(r_["state"] == "CANCELLED" for r_ in st["runs"]), st["runs"]
    assert "production" not in Registry(s.storage).aliases("cancelled")


def test_bad_grids_are_refused_before_anything_is_queued(two_trainers):
    run, s, data = two_trainers
    folder = os.path.join(s.storage, "sweeps")
    before = sorted(os.listdir(folder)) if os.path.exists(folder) else []
    for grid, reason in (("nosuch=1,2", "unknown training option 'nosuch'"), ("lr=fast", "values must be float"),
                         ("lr", "write NAME=V1,V2")):
        r = run("sweep", data, "--grid", grid)
        assert r.returncode == 2 and reason in r.stderr, r.stderr  # a usage error
    assert (sorted(os.listdir(folder)) if os.path.exists(folder) else []) == before

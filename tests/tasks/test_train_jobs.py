"""Training jobs through the real queue: progress, crash resume, the job lock, the promotion
gate and cancel/resume. Real Redis, real worker processes (the `live` stack); no mocks."""
import os
import signal
import time

import numpy as np
import pytest

from model import checkpoint, storage
from model.data import sources
from model.data.samples import write_sample
from model.registry.versions import Registry
from model.train import Trainer, make_config
from tasks import jobfiles, keys, records
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

# A run of a few seconds: the sample repeated to 20,000 rows, the faithful recipe (plain
# SGD, lr 0.1) with small batches, 12 epochs of about 0.2 s on a worker: long enough that a
# cancel or a kill lands mid-run (5 epochs became too short once training got faster).
BIG_ROWS = 20000
BIG = dict(epochs=12, batch_size=8)


def big_config():
    return make_config("faithful", **BIG)


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    """{"small": the sample's train.csv (2,500 rows), "big": it repeated to BIG_ROWS rows}."""
    folder = tmp_path_factory.mktemp("train-data")
    paths = write_sample(str(folder), images=False)
    with open(paths["train"]) as f:
        header = f.readline()
        body = f.readlines()
    rows = (body * (BIG_ROWS // len(body) + 1))[:BIG_ROWS]
    big = folder / "big.csv"
    big.write_text(header + "".join(rows))
    return {"small": paths["train"], "big": str(big)}


@pytest.fixture(scope="module")
def reference_params(csvs):
    """Weights of an uninterrupted in-process run with big_config() on the big CSV."""
    ds = sources.load_training(csvs["big"])
    t = Trainer(big_config(), ds.pixels, ds.labels)
    t.run()
    return dict(t.params, mean=t.mean, std=t.std)


def submit(live, data_ref, name, config, job_id=None):
    from worker.client import submit_training
    return submit_training(data_ref, name, config, app=live.app, settings=live.settings, job_id=job_id)


def status(live, job_id):
    from worker.client import status as st
    return st(live.app, live.settings, job_id)


def root(live):
    return live.settings.storage


def train_log(live):
    with open(os.path.join(live.home, "logs", "worker-train.log"), errors="replace") as f:
        return f.read()


def assert_same_weights(model_file, ref):
    m = checkpoint.load_model(model_file)
    got = dict(m.params, mean=m.mean, std=m.std)
    for k in ("W1", "b1", "W2", "b2", "mean", "std"):
        assert got[k].dtype == ref[k].dtype, k
        assert np.array_equal(got[k], ref[k]), f"{k} differs from the uninterrupted run"


def test_progress_is_visible_while_training(live, csvs):
    job = submit(live, csvs["big"], "progress", big_config())
    seen = {}

    def after_epoch_one():
        st = status(live, job.id)
        assert st["state"] not in ("FAILURE", "SUCCESS"), st
        p = st["progress"]
        if st["state"] == "PROGRESS" and p.get("val_accuracy") is not None and p.get("epoch", 0) >= 2:
            seen["status"] = st
            meta = live.app.backend.get_task_meta(job.id)
            seen["backend_state"], seen["backend_info"] = meta["status"], meta["result"]
            return True
        return False

    wait_for(after_epoch_one, 60, "progress with val_accuracy while the job runs")
    p = seen["status"]["progress"]
    assert p["epochs"] == BIG["epochs"] and 2 <= p["epoch"] <= BIG["epochs"]
    assert p["batches"] == -(-int(BIG_ROWS * 0.9) // BIG["batch_size"]) and 1 <= p["batch"] <= p["batches"]
    assert p["loss"] > 0 and 0 <= p["val_accuracy"] <= 1
    assert [h["epoch"] for h in p["history"]] == list(range(1, len(p["history"]) + 1))
    # the same progress is published as the task's PROGRESS state in the result backend
    assert seen["backend_state"] == "PROGRESS", seen["backend_state"]
    assert {"epoch", "epochs", "batch", "loss", "val_accuracy"} <= set(seen["backend_info"])

    manifest = job.wait(timeout=90)
    assert manifest["state"] == "SUCCESS"
    assert manifest["version"] == "1" and manifest["epochs_done"] == BIG["epochs"]
    assert 0.9 < manifest["val_accuracy"] <= 1.0
    final = status(live, job.id)
    assert final["state"] == "SUCCESS" and final["version"] == "1"
    assert Registry(root(live)).aliases("progress") == {"latest": "1", "production": "1"}


def wait_mid_run_with_checkpoint(live, job, action):
    """Wait until the job is in epoch 2 or later, not in its last, with a checkpoint on
    storage -> the checkpoint's reference. Fails if the job ended before `action`."""
    state_ref = jobfiles.ref(root(live), job.id, "state.npz")

    def ready():
        st = status(live, job.id)
        assert st["state"] not in ("SUCCESS", "FAILURE"), f"finished before the {action}: {st}"
        epoch = st["progress"].get("epoch", 0)
        return 2 <= epoch < BIG["epochs"] and storage.exists(state_ref)

    wait_for(ready, 60, "epoch 2 with a checkpoint")
    return state_ref


def test_killed_worker_redelivers_and_resumes_bit_for_bit(live, csvs, reference_params):
    job = submit(live, csvs["big"], "crash", big_config())
    state_ref = wait_mid_run_with_checkpoint(live, job, "kill")
    pool = live.stack.pids("worker-train")[1:]
    assert pool, "the train worker has no pool process"
    killed_in = status(live, job.id)["progress"]["epoch"]
    for pid in pool:
        os.kill(pid, signal.SIGKILL)
    saved = checkpoint.load_state(state_ref)["position"]["epoch"]
    assert saved >= 1

    manifest = job.wait(timeout=120)
    assert manifest["state"] == "SUCCESS", manifest
    assert manifest["epochs_done"] == BIG["epochs"]
    assert [h["epoch"] for h in manifest["history"]] == list(range(1, BIG["epochs"] + 1))
    assert not set(pool) & set(live.stack.pids("worker-train")), "the killed pool process is back?"
    log = train_log(live)
    assert f"job {job.id} resumes at epoch" in log, "the redelivered job did not resume from its checkpoint"
    assert killed_in >= 2
    assert_same_weights(manifest["model"], reference_params)


def test_a_delivery_that_finds_the_job_lock_held_does_not_train(live, csvs):
    """Another delivery holds the job lock (here: the test, with the key tasks/train.py uses):
    this delivery must not train; it retries, and trains once the lock is free. A copy sent
    after the job finished returns the manifest without training again."""
    from tasks.train import LOCKED_RETRY, train_job
    job_id = jobfiles.new_job_id("train")
    r = live.app.backend.client
    lock = r.lock(keys.job_lock(job_id), timeout=120)
    assert lock.acquire(blocking=False)
    try:
        job = submit(live, csvs["small"], "locked", make_config("faithful", epochs=2), job_id=job_id)
        wait_for(lambda: live.app.backend.get_task_meta(job_id)["status"] == "RETRY", 30,
                 "the locked-out delivery to retry")
        time.sleep(LOCKED_RETRY + 1)  # at least one more attempt, still locked out
        assert f"job {job_id} is running in another delivery; this one retries" in train_log(live)
        assert not storage.exists(jobfiles.ref(root(live), job_id, "progress.json")), "it trained anyway"
        assert not storage.exists(jobfiles.ref(root(live), job_id, "state.npz"))
        assert jobfiles.read_manifest(root(live), job_id) is None
        assert "locked" not in Registry(root(live)).names()
        assert status(live, job_id)["state"] not in ("SUCCESS", "FAILURE", "CANCELLED")
    finally:
        lock.release()
    manifest = job.wait(timeout=60)  # the pending retry now gets the lock and trains
    assert manifest is not None and manifest["state"] == "SUCCESS" and manifest["job_id"] == job_id
    assert manifest["epochs_done"] == 2 and manifest["version"] == "1"
    assert live.app.backend.get_task_meta(job_id)["result"].startswith("locked:1 ")  # its one-line summary

    # a duplicate delivery after the end returns the manifest's summary and trains nothing; its
    # result is read from the backend, not with AsyncResult.get(), whose result subscription
    # outlived the stack and ended the test run with "Exception ignored in AsyncResult.__del__"
    live.app.backend.forget(job_id)
    train_job.apply_async((job_id, "locked", "faithful"), task_id=job_id)
    meta = wait_for(lambda: (m := live.app.backend.get_task_meta(job_id))["status"] == "SUCCESS" and m, 30,
                    "the duplicate delivery's result")
    assert meta["result"] == records.TrainJob.summary(manifest)  # the first run's, not a second run's
    assert [v["version"] for v in Registry(root(live)).versions("locked")] == ["1"]


def test_promotion_gate_through_the_queue(live, csvs):
    from worker.cli import main
    reg = Registry(root(live))
    first = submit(live, csvs["small"], "gate", make_config("faithful", epochs=3)).wait(timeout=60)
    assert first["state"] == "SUCCESS" and first["promotion"]["promoted"] is True
    assert "first version" in first["promotion"]["reason"]
    assert reg.aliases("gate") == {"latest": "1", "production": "1"}

    worse = submit(live, csvs["small"], "gate", make_config("faithful", epochs=1, lr=1e-5)).wait(timeout=60)
    assert worse["state"] == "SUCCESS" and worse["version"] == "2"
    assert worse["val_accuracy"] < first["val_accuracy"]
    assert worse["promotion"]["promoted"] is False
    meta = reg.metadata("gate", "2")
    assert meta["promotion"]["promoted"] is False and meta["promotion"]["previous_version"] == "1"
    assert "production stays at version 1" in meta["promotion"]["reason"]
    assert meta["promotion"]["tolerance"] == live.settings.promote_tolerance == 0.0
    assert reg.aliases("gate") == {"latest": "2", "production": "1"}
    assert reg.resolve("gate")[1]["version"] == "1"  # bare names follow production

    # `digits promote` moves production by hand (the command reads DIGITS_STORAGE)
    assert main(["promote", "gate", "2"]) == 0
    assert reg.aliases("gate") == {"latest": "2", "production": "2"}
    record = reg.alias_record("gate", "production")
    assert record["previous"] == "1" and "by hand" in record["reason"]
    assert reg.resolve("gate")[1]["version"] == "2"


def test_promote_tolerance_setting_reaches_the_gate(tmp_path, monkeypatch):
    from model import network
    from worker import settings
    from worker.app import celery_config
    monkeypatch.setenv("DIGITS_PROMOTE_TOLERANCE", "0.02")
    s = settings.load()
    assert s.promote_tolerance == 0.02
    assert celery_config(s)["digits_promote_tolerance"] == 0.02  # what train_job passes to register
    reg = Registry(tmp_path / "store")

    def register(reg, acc, seed, tolerance):
        model = checkpoint.make_model(network.init_params(np.random.default_rng(seed)),
                                      np.zeros(784, np.float32), np.ones(784, np.float32), recipe="faithful")
        return reg.register("digits", model, metrics={"val_accuracy": acc}, history=[], config={},
                            recipe="faithful", data_fingerprint="fp", data_source="x.csv",
                            job_id=f"job-{seed}", tolerance=tolerance)

    register(reg, 0.90, seed=1, tolerance=s.promote_tolerance)
    slightly_worse = register(reg, 0.885, seed=2, tolerance=s.promote_tolerance)
    assert slightly_worse["promotion"]["promoted"] is True and slightly_worse["promotion"]["tolerance"] == 0.02
    assert reg.aliases("digits")["production"] == "2"
    much_worse = register(reg, 0.85, seed=3, tolerance=s.promote_tolerance)
    assert much_worse["promotion"]["promoted"] is False
    assert reg.aliases("digits")["production"] == "2"
    strict = register(reg, 0.88, seed=4, tolerance=0.0)  # 0.88 < 0.885 with no tolerance
    assert strict["promotion"]["promoted"] is False


def test_cancel_stops_at_a_batch_boundary_and_resubmit_resumes(live, csvs, reference_params):
    job = submit(live, csvs["big"], "cancel", big_config())
    state_ref = wait_mid_run_with_checkpoint(live, job, "cancel")
    job.cancel()
    t_cancel = time.time()
    assert status(live, job.id)["state"] in ("CANCELLING", "CANCELLED")
    manifest = job.wait(timeout=30)
    stopped_after = time.time() - t_cancel
    assert manifest["state"] == "CANCELLED", manifest
    assert stopped_after < 5, f"took {stopped_after:.1f}s to stop"
    assert manifest["checkpoint"] == state_ref and storage.exists(state_ref)
    assert 1 <= manifest["epochs_done"] < BIG["epochs"]
    pos = checkpoint.load_state(state_ref)["position"]
    assert pos["epoch"] == manifest["epochs_done"]
    # a batch boundary: mid-epoch, or the first batch of an epoch when the cancel was seen
    # just as one ended (the cancel's arrival is not ours to time)
    assert 0 <= pos["batch"] < -(-int(BIG_ROWS * 0.9) // BIG["batch_size"]), \
        f"expected a batch-boundary checkpoint, got {pos}"
    assert "cancel" not in Registry(root(live)).names()

    again = submit(live, csvs["big"], "cancel", big_config(), job_id=job.id)
    assert again.id == job.id
    final = again.wait(timeout=90)
    assert final is not None and final["state"] == "SUCCESS", final
    assert final["epochs_done"] == BIG["epochs"]
    assert f"job {job.id} resumes at epoch {pos['epoch'] + 1} batch {pos['batch']}" in train_log(live)
    assert storage.exists(state_ref)
    # resumed mid-epoch, it still ends exactly where an uninterrupted run ends
    assert_same_weights(final["model"], reference_params)


def test_a_failed_run_frees_its_model_for_the_next_retrain(live, csvs, tmp_path):
    """The model-active marker (what makes a scheduled retrain skip) goes with a failed run;
    before the fix it lived for visibility_timeout (12 h) when the run failed before its
    first progress publication, so no retrain ran for half a day."""
    from model.errors import JobError
    from tasks.train import active_key
    with open(csvs["small"]) as f:
        header, good = f.readline(), f.readline()
    bad = tmp_path / "bad.csv"
    bad.write_text(header + good + good.replace(",", ",x", 1) + good)
    r = live.app.backend.client
    job = submit(live, str(bad), "failing", make_config("faithful", epochs=1))
    assert r.get(active_key("failing")).decode() == job.id
    with pytest.raises(JobError, match="failed: .*row 2"):
        job.wait(timeout=60)
    assert status(live, job.id)["state"] == "FAILURE"
    assert r.get(active_key("failing")) is None
    assert "failing" not in Registry(root(live)).names()

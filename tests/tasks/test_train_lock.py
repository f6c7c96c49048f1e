"""A training job's lock that survives a pause (tasks/liveness.py): a training process frozen
(SIGSTOP) for 45 s, past its lock's 30 s, takes the lapsed lock back when it wakes up and
ends SUCCESS with exactly the weights of an uninterrupted run; a run whose lock was taken
by another delivery meanwhile stops without touching the job."""
import os
import signal
import time
import uuid

import numpy as np
import pytest

from model import checkpoint
from model.data import sources
from model.data.samples import write_sample
from model.train import Trainer, make_config
from tasks import keys
from tasks.liveness import LockLost, keep_lock
from tasks.train import LOCK_TTL
from tests.conftest import wait_for
from worker.client import submit_training

pytestmark = pytest.mark.integration
TRAIN = dict(epochs=6, batch_size=8, seed=3)  # about a second an epoch on a worker
FREEZE = 45


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory):
    d = tmp_path_factory.mktemp("train-lock")
    paths = write_sample(str(d / "sample"), images=False)
    with open(paths["train"]) as f:
        header, rows = f.readline(), f.readlines()
    path = d / "train.csv"
    path.write_text(header + "".join((rows * 8)[:20000]))
    return str(path)


def progress_epoch(live, job_id):
    import json
    try:
        with open(os.path.join(live.settings.storage, "jobs", job_id, "progress.json")) as f:
            return json.load(f).get("epoch", 0)
    except (OSError, ValueError):
        return 0


def test_a_training_process_frozen_past_its_lock_takes_it_back_and_succeeds(fault_stack, train_csv):
    live = fault_stack
    r = live.app.backend.client
    job_id = f"train-frozen-{uuid.uuid4().hex[:8]}"
    job = submit_training(train_csv, "frozen", make_config("faithful", **TRAIN), app=live.app,
                          settings=live.settings, job_id=job_id)
    wait_for(lambda: progress_epoch(live, job_id) >= 2, 120, "epoch 2")
    pid = int(r.get(keys.lock_owner(job_id)).decode().rpartition(":")[2])
    os.kill(pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        assert r.exists(keys.job_lock(job_id))
        wait_for(lambda: not r.exists(keys.job_lock(job_id)), LOCK_TTL + 10, "the lock to lapse")
        time.sleep(max(0.0, FREEZE - (time.monotonic() - frozen_at)))  # the rest of the 45 s pause
    finally:
        os.kill(pid, signal.SIGCONT)
    m = job.wait(timeout=180)
    assert m["state"] == "SUCCESS"
    print(f"training frozen {FREEZE}s: SUCCESS {time.monotonic() - frozen_at - FREEZE:.1f}s after it woke up")
    ds = sources.load_training(train_csv)
    t = Trainer(make_config("faithful", **TRAIN), ds.pixels, ds.labels)
    t.run()
    got = checkpoint.load_model(m["model"])
    for k in ("W1", "b1", "W2", "b2"):
        assert np.array_equal(got.params[k], t.params[k]), f"{k} differs from an uninterrupted run"


def test_a_lapsed_lock_is_taken_back_only_when_free(fault_stack):
    r = fault_stack.app.backend.client
    job_id = f"lock-{uuid.uuid4().hex[:8]}"
    mine = r.lock(keys.job_lock(job_id), timeout=0.2, blocking=False)
    assert mine.acquire(blocking=False)
    wait_for(lambda: not r.exists(keys.job_lock(job_id)), 10, "the lock to lapse")
    keep_lock(r, mine, job_id, 5)  # free: taken back with the same token
    assert r.get(keys.job_lock(job_id)) == mine.local.token and r.ttl(keys.job_lock(job_id)) > 3
    r.pexpire(keys.job_lock(job_id), 1)
    wait_for(lambda: not r.exists(keys.job_lock(job_id)), 10, "the lock to lapse again")
    other = r.lock(keys.job_lock(job_id), timeout=5, blocking=False)
    assert other.acquire(blocking=False)  # another delivery took it meanwhile
    r.set(keys.lock_owner(job_id), "elsewhere:42")
    with pytest.raises(LockLost, match="elsewhere:42"):
        keep_lock(r, mine, job_id, 5)
    assert r.get(keys.job_lock(job_id)) == other.local.token  # left to its owner
    r.delete(keys.job_lock(job_id), keys.lock_owner(job_id))

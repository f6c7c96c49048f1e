"""A full Redis (maxmemory reached under the noeviction policy) on a real `digits up`, and a
training message lost with its bookkeeping. Nothing is mocked: `CONFIG SET maxmemory` makes
Redis refuse writes in the middle of a job, for real, then memory is freed.

The stack must ride it out: no worker dies of it ("Unrecoverable error"), no worker hangs,
`digits up` keeps Redis, clients print one line and wait (or exit 3 past
DIGITS_BROKER_OUTAGE), and within a minute of memory being freed the job ends exact.
"""
import os
import signal
import time

import psutil
import pytest
import redis

from tests.conftest import wait_for
from tests.worker.test_recovery import (  # noqa: F401 (drill and inputs are fixtures)
    RECOVERY, Up, assert_exact_output, assert_exact_weights, chunks_done, drill, ended, finish, inputs, predict_args,
    start, train_args)

pytestmark = pytest.mark.integration
FULL = 20  # seconds Redis stays full


@pytest.fixture(scope="module")
def up(drill):
    drill["env"]["DIGITS_WORKER_PATIENCE"] = "15"
    stack = Up(drill["env"], str(drill["dir"])).start()
    yield stack
    stack.stop()


def logs(drill, name):
    with open(os.path.join(drill["env"]["DIGITS_HOME"], "logs", f"{name}.log"), errors="replace") as f:
        return f.read()


def test_a_full_redis_mid_job_is_an_outage_not_a_crash(drill, up, inputs, tmp_path):
    r = redis.Redis(unix_socket_path=up.record()["socket"])
    redis_pid, workers = up.child("redis"), (up.child("worker-predict"), up.child("worker-train"))
    out = tmp_path / "sub.csv"
    client = start(drill, *predict_args(inputs, out, "predict-full", chunk_rows=50))
    wait_for(lambda: chunks_done(drill, "predict-full") >= 5, 60, "5 chunks done")
    # full: every write is refused from here on (a cap just above the memory used would let writes
    # through again whenever a delete frees a little, as acknowledgements do)
    r.config_set("maxmemory", 1)
    full_at = time.monotonic()
    try:
        assert not ended(drill, "predict-full"), "the job ended before Redis was full: make it bigger"
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            r.set("digits:test:filler", "x")
        # a client submitting now says so in one line and, past DIGITS_BROKER_OUTAGE, exits 3
        for args in (train_args(inputs, tmp_path / "m.npz", "train-full"),
                     predict_args(inputs, tmp_path / "p.csv", "predict-refused")):
            refused = drill["run"](*args, DIGITS_BROKER_OUTAGE="3", timeout=60)
            assert refused.returncode == 3, refused.stderr
            assert "Traceback" not in refused.stderr, refused.stderr
            assert "is out of memory" in refused.stderr and "unreachable" not in refused.stderr, refused.stderr
        time.sleep(max(0.0, FULL - (time.monotonic() - full_at)))  # the outage lasts FULL seconds
    finally:
        r.config_set("maxmemory", 0)
        r.delete("digits:test:filler")
    freed = time.monotonic()
    _, err = finish(client, RECOVERY + 60)
    took = time.monotonic() - freed
    print(f"full Redis for {FULL}s: the job ended {took:.1f}s after memory was freed")
    assert took < RECOVERY
    assert_exact_output(out, inputs)
    assert len([ln for ln in err.splitlines() if "is out of memory" in ln]) <= 1, err
    # the stack rode it out: same Redis, no worker died of it or was given up on
    assert up.proc.poll() is None and up.child("redis") == redis_pid
    assert "Unrecoverable error" not in logs(drill, "worker-predict") + logs(drill, "worker-train")
    assert "died" not in up.stderr(), up.stderr()
    assert (up.child("worker-predict"), up.child("worker-train")) == workers, up.stderr()
    # and it works again: a new job runs to the end
    again = drill["run"](*predict_args(inputs, tmp_path / "again.csv", "predict-after-full"), timeout=120)
    assert again.returncode == 0, again.stderr
    assert_exact_output(tmp_path / "again.csv", inputs)


def test_a_hung_worker_is_replaced(drill, up, inputs, tmp_path):
    """A worker that exists but answers nothing (its main process frozen here, as a deadlocked
    one) is replaced by `digits up` once DIGITS_WORKER_PATIENCE (15 s) has passed, and the
    job it held completes exact."""
    out = tmp_path / "sub.csv"
    client = start(drill, *predict_args(inputs, out, "predict-hung"))
    wait_for(lambda: chunks_done(drill, "predict-hung") >= 5, 60, "5 chunks done")
    worker = up.child("worker-predict")
    os.kill(worker, signal.SIGSTOP)
    hung_at = time.monotonic()
    try:
        wait_for(lambda: up.child("worker-predict") != worker, 60, "the hung worker to be replaced")
    finally:
        if psutil.pid_exists(worker):
            os.kill(worker, signal.SIGCONT)
    replaced = time.monotonic() - hung_at
    finish(client, RECOVERY + 60)
    print(f"hung worker: replaced {replaced:.1f}s after it stopped answering, job ended "
          f"{time.monotonic() - hung_at:.1f}s after")
    assert_exact_output(out, inputs)
    assert "answered no ping" in up.stderr()


def test_a_training_message_lost_with_its_bookkeeping_is_sent_again(drill, up, inputs, tmp_path):
    """What a Redis killed before it wrote its last second to disk, or a worker whose taking of
    a message a full Redis refused to record, loses: the training job's only message (deleted
    here for real while the train worker is frozen). Nothing holds it any more; the watchdog
    finds the job neither ended, nor running, nor queued, and sends it again."""
    r = redis.Redis(unix_socket_path=up.record()["socket"])
    worker = psutil.Process(up.child("worker-train"))
    frozen = [worker] + worker.children(recursive=True)
    for p in frozen:
        p.send_signal(signal.SIGSTOP)
    try:
        out = tmp_path / "model.npz"
        client = start(drill, *train_args(inputs, out, "train-lost"))
        wait_for(lambda: r.llen("train") > 0, 60, "the training message in its queue")
        r.delete("train")  # gone, as with a Redis that died before writing it
    finally:
        for p in frozen:
            p.send_signal(signal.SIGCONT)
    lost_at = time.monotonic()
    finish(client, RECOVERY + 120)
    print(f"lost training message: the job ended {time.monotonic() - lost_at:.1f}s after its message was lost")
    assert_exact_weights(out, inputs)

"""Drills on a real `digits up` (a subprocess with its own DIGITS_HOME): SIGKILL of Redis,
of a worker, of `digits up` itself, and SIGTERM of `digits up`, in the middle of real jobs.
After each one the job completes with exactly the output of an uninterrupted run (byte for
byte) or exactly its weights (bit for bit). Nothing is mocked: the failures are real signals.

The watchdog runs every second here (DIGITS_WATCHDOG_INTERVAL=1, DIGITS_WATCHDOG_GRACE=2)
to keep the drills short; `python bench/bench_recovery.py` measures the defaults.
"""
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import psutil
import pytest

from model import checkpoint
from model.data import sources
from model.data.block import PIXEL_COLUMNS
from model.data.samples import write_sample
from model.train import Trainer, make_config
from tasks import jobfiles
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

DIGITS = shutil.which("digits")
RECOVERY = 60  # the target: the job completes within 60 s of the stack being back
TRAIN = dict(epochs=8, batch_size=8, seed=3)  # about a second an epoch on a worker


class Up:
    """A `digits up --no-flower` subprocess and what its stack.json says about it."""

    def __init__(self, env, log_dir):
        self.env, self.log_dir = env, log_dir
        self.home = env["DIGITS_HOME"]
        self.proc = None
        self.runs = 0

    def start(self):
        self.runs += 1
        self.err = os.path.join(self.log_dir, f"up-{self.runs}.err")
        with open(self.err, "wb") as err, open(os.path.join(self.log_dir, f"up-{self.runs}.out"), "wb") as out:
            self.proc = subprocess.Popen([DIGITS, "up", "--no-flower"], env=self.env, stdout=out, stderr=err)
        wait_for(lambda: self.proc.poll() is not None or "workers ready" in self.stderr(), 90, "digits up")
        assert self.proc.poll() is None, self.stderr()
        return self

    def stderr(self):
        with open(self.err, errors="replace") as f:
            return f.read()

    def record(self):
        with open(os.path.join(self.home, "stack.json")) as f:
            return json.load(f)

    def child(self, name):
        return self.record()["children"][name][0]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def drill(tmp_path_factory):
    """{"env", "run", "dir"}: an environment of its own (home, storage) for the drills."""
    assert DIGITS, "the `digits` console script is not installed (pip install -e .)"
    d = tmp_path_factory.mktemp("drill")
    env = dict(os.environ, DIGITS_HOME=str(d / "home"), DIGITS_STORAGE=str(d / "home" / "storage"),
               DIGITS_PREDICT_CONCURRENCY="2", DIGITS_TRAIN_CONCURRENCY="1",
               DIGITS_WATCHDOG_INTERVAL="1", DIGITS_WATCHDOG_GRACE="2",
               DIGITS_RESTART_LIMIT="100")  # the drills kill Redis more often a minute than the default 5 allows
    for k in ("DIGITS_BROKER_URL", "DIGITS_RESULT_BACKEND", "DIGITS_RETRAIN_CRON"):
        env.pop(k, None)

    def run(*args, timeout=180, **extra):
        return subprocess.run([DIGITS, *map(str, args)], env=dict(env, **extra), capture_output=True,
                              text=True, timeout=timeout)

    return {"env": env, "run": run, "dir": d}


@pytest.fixture(scope="module")
def up(drill):
    stack = Up(drill["env"], str(drill["dir"])).start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def inputs(drill, sample, trained_model):
    """A 20,000-row test CSV with its uninterrupted --local output, and a 20,000-row
    training CSV with the weights of an uninterrupted run of TRAIN."""
    d = drill["dir"]
    big = d / "big.csv"
    body = "".join(",".join(map(str, r)) + "\n" for r in sample["test_x"].tolist())
    big.write_text(",".join(PIXEL_COLUMNS) + "\n" + body * 40)
    ref = d / "reference.csv"
    r = drill["run"]("predict", big, "--model", trained_model[1], "--out", ref, "--local", "--chunk-rows", 250)
    assert r.returncode == 0, r.stderr
    paths = write_sample(str(d / "sample"), images=False)
    with open(paths["train"]) as f:
        header, rows = f.readline(), f.readlines()
    train = d / "train.csv"
    train.write_text(header + "".join((rows * 8)[:20000]))
    ds = sources.load_training(str(train))
    t = Trainer(make_config("faithful", **TRAIN), ds.pixels, ds.labels)
    t.run()
    return {"big": str(big), "reference": ref.read_bytes(), "model": trained_model[1], "train": str(train),
            "weights": dict(t.params, mean=t.mean, std=t.std)}


def ended(drill, job_id):
    return os.path.exists(os.path.join(drill["env"]["DIGITS_STORAGE"], "jobs", job_id, "manifest.json"))


def chunks_done(drill, job_id):
    return jobfiles.chunks_done(drill["env"]["DIGITS_STORAGE"], job_id)


def epoch(drill, job_id):
    try:
        with open(os.path.join(drill["env"]["DIGITS_STORAGE"], "jobs", job_id, "progress.json")) as f:
            return json.load(f).get("epoch", 0)
    except (OSError, ValueError):
        return 0


def start(drill, *args):
    """`digits ARGS` as a waiting client in the background -> Popen (text output)."""
    return subprocess.Popen([DIGITS, *map(str, args)], env=drill["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def predict_args(inputs, out, job_id, *more, chunk_rows=250):
    return ["predict", inputs["big"], "--model", inputs["model"], "--out", out, "--chunk-rows", chunk_rows,
            "--job-id", job_id, *more]


def train_args(inputs, out, job_id, *more):
    return ["train", inputs["train"], "--recipe", "faithful", "--epochs", TRAIN["epochs"], "--batch-size",
            TRAIN["batch_size"], "--seed", TRAIN["seed"], "--out", out, "--job-id", job_id, *more]


def assert_exact_output(out, inputs):
    with open(out, "rb") as f:
        assert f.read() == inputs["reference"], "the output differs from the uninterrupted --local run"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask  # the umask's mode, not mkstemp's 0600


def assert_exact_weights(model_file, inputs):
    m = checkpoint.load_model(model_file)
    got, ref = dict(m.params, mean=m.mean, std=m.std), inputs["weights"]
    for k in ("W1", "b1", "W2", "b2", "mean", "std"):
        assert got[k].dtype == ref[k].dtype and np.array_equal(got[k], ref[k]), f"{k} differs"


def finish(client, timeout):
    out, err = client.communicate(timeout=timeout)
    assert client.returncode == 0, err
    assert "Traceback" not in err, err
    return out, err


# ----------------------------------------------------------------------------- Redis dies

def kill_redis(drill, up, job, down=0.0):
    """SIGKILL the stack's Redis while `job` runs, dead for `down` seconds at least (see
    sigkill_redis); wait for `digits up` to start it again -> the monotonic time it was back."""
    redis_pid = up.child("redis")
    timer = sigkill_redis(up, down)
    assert not ended(drill, job), "the job ended before Redis was killed"
    timer.join()
    wait_for(lambda: up.record()["children"]["redis"][0] != redis_pid, 30, "Redis restarted")
    return time.monotonic()


def sigkill_redis(up, down):
    """SIGKILL the stack's Redis and wait until it is dead; `digits up` is SIGSTOPped for
    `down` seconds meanwhile (a timer thread's SIGCONT, so that it cannot restart Redis
    sooner), then starts it again -> the timer, started."""
    import threading
    os.kill(up.proc.pid, signal.SIGSTOP)
    timer = threading.Timer(down, os.kill, (up.proc.pid, signal.SIGCONT))
    try:
        redis = psutil.Process(up.child("redis"))
        redis.kill()
        wait_for(lambda: not redis.is_running() or redis.status() == psutil.STATUS_ZOMBIE, 10, "Redis dead")
    finally:
        timer.start()
    return timer


def test_redis_sigkill_mid_prediction(drill, up, inputs, tmp_path):
    out = tmp_path / "sub.csv"
    client = start(drill, *predict_args(inputs, out, "predict-redis-kill"))
    wait_for(lambda: chunks_done(drill, "predict-redis-kill") >= 5, 60, "5 chunks done")
    back = kill_redis(drill, up, "predict-redis-kill")
    _, err = finish(client, RECOVERY + 60)
    assert time.monotonic() - back < RECOVERY
    assert len([ln for ln in err.splitlines() if "unreachable" in ln]) <= 1, err  # at most one line
    assert_exact_output(out, inputs)
    assert up.proc.poll() is None and "redis exited" in up.stderr()


def client_settings(drill, monkeypatch):
    """The drill's settings in this process (its DIGITS_* variables set for the test) -> Settings,
    for a client run in the test itself."""
    from worker import settings
    for k, v in drill["env"].items():
        if k.startswith("DIGITS_"):
            monkeypatch.setenv(k, v)
    return settings.load()


def test_redis_sigkill_mid_submission(drill, up, inputs, tmp_path, monkeypatch):
    """Redis is SIGKILLed while a client queues a job's first chunks (its record written and
    chunk 0 queued, chunk 1 not yet): the client says so once, sends the job id again when
    `digits up` has Redis back, and the job ends exact."""
    from worker.app import configure
    from worker.client import submit_prediction
    s = client_settings(drill, monkeypatch)
    app = configure(up.record()["broker_url"])
    pushes, said, timers, real_send = [], [], [], app.send_task

    def send_task(name, args, **options):
        pushes.append(args[1] if name == "digits.predict_chunk" else name)
        if len(pushes) == 2:  # Redis dies, for real, before chunk 1 is queued
            timers.append(sigkill_redis(up, 1.5))
        return real_send(name, args, **options)

    monkeypatch.setattr(app, "send_task", send_task)
    out = tmp_path / "sub.csv"
    try:
        job = submit_prediction(inputs["big"], inputs["model"], out, app=app, settings=s, chunk_rows=250,
                                job_id="predict-redis-submit", on_outage=said.append)
    finally:
        for timer in timers:
            timer.join()
    assert len(said) == 1 and "unreachable" in said[0] and "reconnecting" in said[0], said
    assert pushes[:2] == [0, 1] and len(pushes) > s.job_window, pushes  # the job id was sent again
    manifest = job.wait(timeout=RECOVERY + 60, on_outage=said.append)
    assert (manifest["state"], manifest["rows_ok"], manifest["rows_in"]) == ("SUCCESS", 20000, 20000)
    assert_exact_output(out, inputs)
    assert "redis exited" in up.stderr()


def test_redis_sigkill_mid_training_submission(drill, up, inputs, tmp_path, monkeypatch):
    """Redis is SIGKILLed as a client (the Celery app) sends a training job, its record and
    active key written, and stays dead for 2 s: the client says so once and sends the job id
    again once Redis is back; the job trains exactly the uninterrupted run's weights."""
    from model.train import make_config
    from worker.app import configure
    from worker.client import submit_training
    s = client_settings(drill, monkeypatch)
    app = configure(up.record()["broker_url"])
    sends, said, timers, real_send = [], [], [], app.send_task

    def send_task(name, args, **options):
        sends.append(name)
        if len(sends) == 1:  # Redis dies, for real, for 2 s: longer than the send's own retries
            timers.append(sigkill_redis(up, 2.0))
        return real_send(name, args, **options)

    monkeypatch.setattr(app, "send_task", send_task)
    try:
        job = submit_training(inputs["train"], "drill", make_config("faithful", **TRAIN), app=app, settings=s,
                              job_id="train-redis-submit", on_outage=said.append)
    finally:
        for timer in timers:
            timer.join()
    assert len(sends) >= 2 and len(said) == 1 and "unreachable" in said[0], (sends, said)  # sent again
    manifest = job.wait(timeout=RECOVERY + 90, on_outage=said.append)
    assert manifest["state"] == "SUCCESS" and sends[0] == "digits.train_job", sends
    assert_exact_weights(manifest["model"], inputs)


def test_redis_sigkill_mid_sweep(drill, up, inputs):
    """A waiting `digits sweep` rides out Redis SIGKILLed mid-run and dead for 2.5 s as
    `digits watch` does: one line about it, and both runs end, with the table and its best."""
    client = start(drill, "sweep", inputs["train"], "--name", "sweep-drill", "--recipe", "faithful",
                   "--grid", "lr=0.1,0.05", "--grid", f"epochs={TRAIN['epochs']}", "--grid", "batch_size=8")
    sweeps = os.path.join(drill["env"]["DIGITS_STORAGE"], "sweeps")
    wait_for(lambda: os.path.isdir(sweeps) and os.listdir(sweeps), 60, "the sweep's record")
    sweep_id = os.listdir(sweeps)[0]
    with open(os.path.join(sweeps, sweep_id, "sweep.json")) as f:
        first = json.load(f)["jobs"][0]
    wait_for(lambda: epoch(drill, first) >= 2, 90, "epoch 2 of the first run")
    back = kill_redis(drill, up, first, down=2.5)  # longer than a poll of the sweep (1 s)
    out, err = finish(client, RECOVERY + 120)
    assert time.monotonic() - back < RECOVERY + 60
    assert len([ln for ln in err.splitlines() if "unreachable" in ln]) == 1, err
    assert out.count("SUCCESS") >= 3 and "best (*)" in out, out  # the sweep's and both runs' rows


def test_a_command_started_while_up_restarts_redis_waits_for_it(drill, up, inputs, tmp_path):
    """`digits predict` started while `digits up`'s Redis is dead (SIGKILLed, `digits up`
    SIGSTOPped so that it cannot restart it yet): the command uses that stack (no stack of
    its own, which the held DIGITS_HOME would refuse), says once that the broker is
    unreachable, and ends exact once `digits up` has Redis back."""
    out, err_path = tmp_path / "sub.csv", tmp_path / "predict.err"
    os.kill(up.proc.pid, signal.SIGSTOP)
    try:
        psutil.Process(up.child("redis")).kill()
        with open(err_path, "w") as err_file:
            client = subprocess.Popen([DIGITS, *map(str, predict_args(inputs, out, "predict-up-restarting"))],
                                      env=drill["env"], stdout=subprocess.PIPE, stderr=err_file, text=True)
        wait_for(lambda: "unreachable" in err_path.read_text() or client.poll() is not None, 30,
                 "the client to meet the outage")
    finally:
        os.kill(up.proc.pid, signal.SIGCONT)
    client.communicate(timeout=RECOVERY + 60)
    err = err_path.read_text()
    assert client.returncode == 0 and "Traceback" not in err, err
    assert "starting an embedded stack" not in err, err
    assert len([ln for ln in err.splitlines() if "unreachable" in ln]) == 1, err
    assert_exact_output(out, inputs)


def test_queued_messages_lost_with_redis_are_sent_again(drill, up, inputs, tmp_path):
    """What a Redis killed before it wrote its last second to disk loses: the queued chunk
    messages of a job (deleted here for real). Nobody holds them any more, so kombu would
    never redeliver them; the watchdog sees the job stop moving and sends its missing work."""
    import redis
    out = tmp_path / "sub.csv"
    client = start(drill, *predict_args(inputs, out, "predict-lost"))
    wait_for(lambda: chunks_done(drill, "predict-lost") >= 5, 60, "5 chunks done")
    r = redis.Redis(unix_socket_path=up.record()["socket"])
    lost = r.llen("predict")
    r.delete("predict")  # the queued window of the job is gone
    assert lost > 0 and not ended(drill, "predict-lost"), "nothing was queued to lose: make the job bigger"
    back = time.monotonic()
    finish(client, RECOVERY + 60)
    assert time.monotonic() - back < RECOVERY
    assert_exact_output(out, inputs)  # the deleted chunks ran: only the watchdog could send them again


def test_redis_sigkill_mid_training(drill, up, inputs, tmp_path):
    out = tmp_path / "model.npz"
    client = start(drill, *train_args(inputs, out, "train-redis-kill"))
    wait_for(lambda: epoch(drill, "train-redis-kill") >= 2, 90, "epoch 2")
    back = kill_redis(drill, up, "train-redis-kill")
    finish(client, RECOVERY + 60)
    assert time.monotonic() - back < RECOVERY
    assert_exact_weights(out, inputs)


# ----------------------------------------------------------------------------- a worker dies

def test_worker_sigkill_mid_prediction_is_requeued_by_the_watchdog(drill, up, inputs, tmp_path):
    out = tmp_path / "sub.csv"
    client = start(drill, *predict_args(inputs, out, "predict-worker-kill"))
    wait_for(lambda: chunks_done(drill, "predict-worker-kill") >= 5, 60, "5 chunks done")
    worker = up.child("worker-predict")
    pool = psutil.Process(worker).children()
    os.kill(worker, signal.SIGKILL)  # the whole worker: its pool dies with it, its messages stay unacked
    assert not ended(drill, "predict-worker-kill"), "the job ended before the worker was killed"
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in pool), 10,
             "the pool processes to die with their worker")
    killed = time.monotonic()
    finish(client, RECOVERY + 60)
    assert time.monotonic() - killed < RECOVERY
    assert_exact_output(out, inputs)
    assert up.child("worker-predict") != worker  # replaced


# ----------------------------------------------------------------------------- `digits up` stops or dies

def test_sigterm_of_up_mid_job_then_status_calm_clients_and_restart(drill, up, inputs, tmp_path):
    """SIGTERM stops workers before Redis, so their work goes back to the queue; with the
    stack gone `status` answers fast from storage and a waiting client gives up after
    DIGITS_BROKER_OUTAGE with one line, or rides the outage out until the stack is back."""
    out = tmp_path / "sub.csv"
    r = drill["run"](*predict_args(inputs, out, "predict-sigterm", "--no-wait", chunk_rows=100))
    assert r.returncode == 0, r.stderr
    wait_for(lambda: chunks_done(drill, "predict-sigterm") >= 5, 60, "5 chunks done")
    up.stop()
    assert up.proc.returncode == 0, up.stderr()
    assert chunks_done(drill, "predict-sigterm") < 200, "the job ended before the stack stopped"

    t0 = time.monotonic()
    st = drill["run"]("status", "predict-sigterm", "--json")
    assert time.monotonic() - t0 < 2, "status took 2 s or more with the broker down"
    assert st.returncode == 3, st.stderr
    info = json.loads(st.stdout)
    assert info["state"] == "STALLED" and info["broker_reachable"] is False
    assert info["last_state"] in ("PENDING", "PROGRESS")
    text = drill["run"]("status", "predict-sigterm")
    assert "unreachable" in text.stdout and "PROGRESS" not in text.stdout and text.returncode == 3

    gives_up = drill["run"]("watch", "predict-sigterm", DIGITS_BROKER_OUTAGE="2", timeout=60)
    assert gives_up.returncode == 3, gives_up.stderr
    errors = [ln for ln in gives_up.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "redis.sock" in errors[0] and "unreachable" in errors[0], gives_up.stderr
    assert "Traceback" not in gives_up.stderr

    err_path = tmp_path / "watch.err"
    with open(err_path, "w") as err_file:
        waiting = subprocess.Popen([DIGITS, "watch", "predict-sigterm"], env=drill["env"], stdout=subprocess.PIPE,
                                   stderr=err_file, text=True)
    wait_for(lambda: "unreachable" in err_path.read_text(), 30, "the waiting watch to notice the outage")
    up.start()
    back = time.monotonic()
    out_text, _ = waiting.communicate(timeout=RECOVERY + 60)
    err = err_path.read_text()
    assert waiting.returncode == 0 and "Traceback" not in err, err
    assert time.monotonic() - back < RECOVERY
    assert "SUCCESS" in out_text
    assert len([ln for ln in err.splitlines() if "unreachable" in ln]) == 1, err
    assert_exact_output(out, inputs)
    done = drill["run"]("status", "predict-sigterm")
    assert done.returncode == 0 and "SUCCESS" in done.stdout


def stack_processes(up):
    """The live processes of the stack: its recorded children and all their descendants."""
    procs = []
    for pid, _ in up.record()["children"].values():
        p = psutil.Process(pid)
        procs += [p] + p.children(recursive=True)
    return procs


def test_sigkill_of_up_leaves_no_process_and_up_starts_again(drill, up, inputs, tmp_path):
    out = tmp_path / "model.npz"
    r = drill["run"](*train_args(inputs, out, "train-up-kill", "--no-wait"))
    assert r.returncode == 0, r.stderr
    wait_for(lambda: epoch(drill, "train-up-kill") >= 2, 90, "epoch 2")
    procs = stack_processes(up)
    assert len(procs) >= 6  # Redis, 2 workers with 3 pool processes, the scheduler
    up.proc.kill()
    up.proc.wait()
    assert not ended(drill, "train-up-kill"), "the job ended before `digits up` was killed"
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs), 5,
             "every process of the killed stack to exit")

    up.start()  # the stale socket and record are cleaned up, not taken for a running stack
    assert "already" not in up.stderr()
    back = time.monotonic()
    wait_for(lambda: ended(drill, "train-up-kill"), RECOVERY, "the job to complete")
    assert time.monotonic() - back < RECOVERY
    st = drill["run"]("status", "train-up-kill", "--json")
    assert st.returncode == 0 and json.loads(st.stdout)["state"] == "SUCCESS", st.stdout
    assert_exact_weights(json.loads(st.stdout)["model"], inputs)

"""Recovery times of the embedded stack after real failures, with the default settings.

    python bench/bench_recovery.py [--rows 300000] [--chunk-rows 2000] [--train-rows 20000]

Runs `digits up --no-flower` as a subprocess under a temporary DIGITS_HOME, and measures,
for jobs cut short by a real signal, the seconds from the failure (and from the stack
being back) to the job's completion, next to an uninterrupted run of the same job:
  - SIGKILL of Redis mid-prediction and mid-training (the stack restarts Redis);
  - SIGKILL of the predict worker mid-prediction (the watchdog requeues its messages);
  - SIGTERM of `digits up` mid-prediction, then `digits up` again;
  - SIGKILL of `digits up` mid-training, then `digits up` again.
Each interrupted output is compared with the uninterrupted one (bytes, or weights bit
for bit). The watchdog runs with its defaults (DIGITS_WATCHDOG_INTERVAL=5, _GRACE=10).
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from model import checkpoint  # noqa: E402
from model.data.block import PIXEL_COLUMNS  # noqa: E402
from model.data.samples import load_sample, write_sample  # noqa: E402
from tasks import jobfiles  # noqa: E402

DIGITS = [sys.executable, "-m", "worker.cli"]
TRAIN = ["--recipe", "faithful", "--epochs", "10", "--batch-size", "8", "--seed", "5"]


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


class Bench:
    def __init__(self, root, chunk_rows):
        self.root = root
        self.home = os.path.join(root, "home")
        self.env = dict(os.environ, DIGITS_HOME=self.home, DIGITS_STORAGE=os.path.join(self.home, "storage"),
                        DIGITS_CHUNK_ROWS=str(chunk_rows), DIGITS_PREDICT_CONCURRENCY="2",
                        PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        for k in ("DIGITS_BROKER_URL", "DIGITS_RESULT_BACKEND", "DIGITS_WATCHDOG_INTERVAL",
                  "DIGITS_WATCHDOG_GRACE"):
            self.env.pop(k, None)
        self.up = None

    def digits(self, *args):
        r = subprocess.run(DIGITS + list(map(str, args)), env=self.env, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"digits {' '.join(map(str, args))} failed: {r.stderr[-2000:]}")
        return r.stdout

    def start_up(self):
        err = open(os.path.join(self.root, "up.err"), "ab")
        self.up = subprocess.Popen(DIGITS + ["up", "--no-flower"], env=self.env, stdout=subprocess.DEVNULL,
                                   stderr=err)
        wait(lambda: os.path.exists(os.path.join(self.home, "stack.json")) and
             json.load(open(os.path.join(self.home, "stack.json"))).get("shared"), 120, "digits up")
        return time.monotonic()

    def child(self, name):
        return json.load(open(os.path.join(self.home, "stack.json")))["children"][name][0]

    def job_file(self, job_id, *parts):
        return os.path.join(self.home, "storage", "jobs", job_id, *parts)

    def chunks(self, job_id):
        return jobfiles.chunks_done(os.path.join(self.home, "storage"), job_id)

    def epoch(self, job_id):
        try:
            return json.load(open(self.job_file(job_id, "progress.json"))).get("epoch", 0)
        except (OSError, ValueError):
            return 0

    def ended(self, job_id):
        return os.path.exists(self.job_file(job_id, "manifest.json"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=300000)
    p.add_argument("--chunk-rows", type=int, default=2000)
    p.add_argument("--train-rows", type=int, default=20000)
    a = p.parse_args()
    root = tempfile.mkdtemp(prefix="digits-bench-recovery-")
    b = Bench(root, a.chunk_rows)
    sample = load_sample()
    big = os.path.join(root, "big.csv")
    rows = "".join(",".join(map(str, r)) + "\n" for r in sample["test_x"].tolist())
    with open(big, "w") as f:
        f.write(",".join(PIXEL_COLUMNS) + "\n" + rows * (a.rows // 500))
    paths = write_sample(os.path.join(root, "sample"), images=False)
    with open(paths["train"]) as f:
        header, body = f.readline(), f.readlines()
    train = os.path.join(root, "train.csv")
    with open(train, "w") as f:
        f.write(header + "".join((body * (a.train_rows // len(body) + 1))[:a.train_rows]))
    model = os.path.join(root, "model.npz")
    b.digits("train", paths["train"], "--local", "--epochs", 2, "--out", model)
    ref = os.path.join(root, "ref.csv")
    b.digits("predict", big, "--model", model, "--out", ref, "--local")
    results = []

    def predict(job, *more):
        return subprocess.Popen(DIGITS + ["predict", big, "--model", model, "--out", os.path.join(root, job + ".csv"),
                                          "--job-id", job, *more], env=b.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def trainer(job, *more):
        return subprocess.Popen(DIGITS + ["train", train, *TRAIN, "--out", os.path.join(root, job + ".npz"),
                                          "--job-id", job, *more], env=b.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def same_output(job):
        return open(os.path.join(root, job + ".csv"), "rb").read() == open(ref, "rb").read()

    def same_weights(job, ref_job="train-plain"):
        x, y = (checkpoint.load_model(os.path.join(root, j + ".npz")) for j in (job, ref_job))
        return all(np.array_equal(x.params[k], y.params[k]) for k in x.params)

    def record(what, t_fail, t_back, t_done, exact, plain, mid_job):
        results.append((what, t_done - t_fail, t_done - t_back, plain, exact, mid_job))

    b.start_up()
    t0 = time.monotonic()
    predict("predict-plain").wait()
    plain_predict = time.monotonic() - t0
    t0 = time.monotonic()
    trainer("train-plain").wait()
    plain_train = time.monotonic() - t0

    for what, target in (("SIGKILL Redis mid-prediction", "predict"), ("SIGKILL Redis mid-training", "train")):
        job = f"{target}-redis"
        client = predict(job) if target == "predict" else trainer(job)
        wait((lambda: b.chunks(job) >= 10) if target == "predict" else (lambda: b.epoch(job) >= 3), 120, what)
        pid = b.child("redis")
        os.kill(pid, signal.SIGKILL)
        t_fail = time.monotonic()
        mid_job = not b.ended(job)
        wait(lambda: b.child("redis") != pid, 60, "Redis back")
        t_back = time.monotonic()
        client.wait()
        exact = same_output(job) if target == "predict" else same_weights(job)
        record(what, t_fail, t_back, time.monotonic(), exact, plain_predict if target == "predict" else plain_train,
               mid_job)

    job = "predict-worker"
    client = predict(job)
    wait(lambda: b.chunks(job) >= 10, 120, "10 chunks")
    pid = b.child("worker-predict")
    os.kill(pid, signal.SIGKILL)
    t_fail = time.monotonic()
    mid_job = not b.ended(job)
    wait(lambda: b.child("worker-predict") != pid, 60, "worker replaced")
    t_back = time.monotonic()
    client.wait()
    record("SIGKILL predict worker mid-prediction", t_fail, t_back, time.monotonic(), same_output(job), plain_predict,
           mid_job)

    for what, sig, target in (("SIGTERM digits up mid-prediction, up again", signal.SIGTERM, "predict"),
                              ("SIGKILL digits up mid-training, up again", signal.SIGKILL, "train")):
        job = f"{target}-up-{sig.name}"
        (predict if target == "predict" else trainer)(job, "--no-wait").wait()
        wait((lambda: b.chunks(job) >= 10) if target == "predict" else (lambda: b.epoch(job) >= 3), 120, what)
        b.up.send_signal(sig)
        t_fail = time.monotonic()
        mid_job = not b.ended(job)
        b.up.wait()
        t_back = b.start_up()
        wait(lambda: b.ended(job), 300, f"{job} to end")
        if target == "train":
            shutil.copy(json.load(open(b.job_file(job, "manifest.json")))["model"], os.path.join(root, job + ".npz"))
        exact = same_output(job) if target == "predict" else same_weights(job)
        record(what, t_fail, t_back, time.monotonic(), exact, plain_predict if target == "predict" else plain_train,
               mid_job)

    b.up.send_signal(signal.SIGTERM)
    b.up.wait()
    print(f"{a.rows:,} rows in chunks of {a.chunk_rows:,}; training {a.train_rows:,} rows x 10 epochs; "
          f"watchdog defaults (interval 5 s, grace 10 s)")
    print(f"{'failure':46} {'failure->done':>13} {'back->done':>10} {'uninterrupted':>13}  exact  mid-job")
    for what, from_fail, from_back, plain, exact, mid_job in results:
        print(f"{what:46} {from_fail:12.1f}s {from_back:9.1f}s {plain:12.1f}s  {str(exact):5}  "
              f"{mid_job if mid_job else 'no: the job had ended, nothing was drilled'}")
    print("FIGURES recovery " + json.dumps({"cases": [
        {"what": w, "from_fail_s": f, "from_back_s": b, "plain_s": p, "exact": bool(e), "mid_job": bool(m)}
        for w, f, b, p, e, m in results]}), flush=True)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

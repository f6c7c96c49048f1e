"""Bulk prediction through the queue vs the single-process seed style, in the same run.

    python bench/bench_predict.py [--data DIR] [--rows 100000] [--big-rows 300000]

Builds Kaggle-layout test CSVs of the 10,000 MNIST test images repeated, starts an
embedded stack with 2 predict worker processes, and measures:
  - seed style: pandas read_csv, float64 forward pass, to_csv (one process);
  - ours: `submit_prediction` through the running stack until the output is written;
  - labels of both compared, and with the in-process (--local) path;
  - peak RSS (VmHWM) of the worker pool processes at --rows and at --big-rows (a fresh
    stack for each size): it should stay flat as the input grows.
"""
import os
import sys
import tempfile
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.common import parser, mnist_csv, repeated_csv, seed_predict, timed  # noqa: E402


def peak_rss_mb(pids):
    peaks = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
        except OSError:
            pass
    return max(peaks) if peaks else float("nan")


def run_stack(home, csv, model_path, out, repeats=2):
    """Start a stack, run the job `repeats` times (first one warms the model cache) -> (seconds list, peak MB)."""
    os.environ.update(DIGITS_HOME=home, DIGITS_STORAGE=os.path.join(home, "storage"),
                      DIGITS_PREDICT_CONCURRENCY="2")
    os.environ.pop("DIGITS_BROKER_URL", None)
    from worker import settings
    from worker.app import configure
    from worker.client import submit_prediction
    from worker.stack import Stack
    s = settings.load()
    stack = Stack(s, record=False, log=lambda *a: None).start()
    try:
        app = configure(stack.url)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            manifest = submit_prediction(csv, model_path, out, app=app, settings=s).wait()
            times.append(time.perf_counter() - t0)
        pool = stack.pids("worker-predict")[1:]
        return times, peak_rss_mb(pool), manifest
    finally:
        stack.stop()


def main():
    p = parser(__doc__)
    p.add_argument("--rows", type=int, default=100000)
    p.add_argument("--big-rows", type=int, default=300000)
    a = p.parse_args()
    from model import batch, checkpoint, sources
    from model.samples import load_sample
    from model.train import Trainer, make_config

    _, test_csv = mnist_csv(a.data)
    csv = repeated_csv(test_csv, os.path.join(a.data, f"test-{a.rows}.csv"), a.rows // 10000)
    big = repeated_csv(test_csv, os.path.join(a.data, f"test-{a.big_rows}.csv"), a.big_rows // 10000)
    work = tempfile.mkdtemp(prefix="digits-bench-")
    s = load_sample()
    t = Trainer(make_config("faithful", epochs=3), s["train_x"], s["train_y"])
    t.run()
    model = checkpoint.make_model(t.params, t.mean, t.std, recipe="faithful")
    model_path = os.path.join(work, "model.npz")
    checkpoint.save_model(model, model_path)

    weights = (t.params["W1"].T.astype(np.float64), t.params["b1"][:, None].astype(np.float64),
               t.params["W2"].T.astype(np.float64), t.params["b2"][:, None].astype(np.float64),
               float(t.mean[0]), float(t.std[0]))
    base_labels, base_s = timed(seed_predict, csv, os.path.join(work, "seed.csv"), weights)

    times, peak_small, manifest = run_stack(os.path.join(work, "home1"), csv, model_path,
                                            os.path.join(work, "queue.csv"))
    queue_labels = pd.read_csv(os.path.join(work, "queue.csv"))["Label"].to_numpy()
    local = os.path.join(work, "local.csv")
    batch.run(sources.open_source(csv, 10000), model, local)
    local_labels = pd.read_csv(local)["Label"].to_numpy()
    _, peak_big, big_manifest = run_stack(os.path.join(work, "home2"), big, model_path,
                                          os.path.join(work, "queue-big.csv"), repeats=1)

    rows = manifest["rows_ok"]
    print(f"{rows} rows ({os.path.getsize(csv) / 1e6:.0f} MB), 2 predict worker processes")
    print(f"seed style (pandas, float64, one process): {base_s:.3f} s = {rows / base_s:,.0f} rows/s")
    print(f"queue, first job (cold model cache):        {times[0]:.3f} s = {rows / times[0]:,.0f} rows/s"
          f"  ratio {base_s / times[0]:.2f}x")
    print(f"queue, stack and cache warm:                {times[-1]:.3f} s = {rows / times[-1]:,.0f} rows/s"
          f"  ratio {base_s / times[-1]:.2f}x")
    print(f"labels: queue == --local: {np.array_equal(queue_labels, local_labels)}; "
          f"queue vs seed float64 agreement {np.mean(queue_labels == base_labels):.5f}")
    print(f"peak RSS of a predict worker process: {peak_small:.0f} MB at {rows} rows, "
          f"{peak_big:.0f} MB at {big_manifest['rows_ok']} rows")


if __name__ == "__main__":
    main()

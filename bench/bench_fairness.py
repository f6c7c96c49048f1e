"""Fair sharing: small jobs submitted right behind a big one, against the idle queue.

    python bench/bench_fairness.py [--data DIR] [--rows 100000] [--small 30] [--chunk-rows 2000]

On one embedded stack (2 predict worker processes), measures in one run:
  - idle: --small 300-row jobs submitted one after the other (as fast as the client
    submits) on an idle queue: each one's latency, submit to manifest;
  - alone: a --rows CSV job (--chunk-rows chunks) by itself;
  - shared: the same big job, then the same --small jobs submitted right after it.
Targets: median small-job latency at most 2x idle; the big job within 10% of its time
alone. Each job keeps at most DIGITS_JOB_WINDOW chunks queued (printed).
"""
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.common import figures, mnist_csv, parser, mnist_rows, sample_model  # noqa: E402


def main():
    p = parser(__doc__)
    p.add_argument("--rows", type=int, default=100000)
    p.add_argument("--small", type=int, default=30)
    p.add_argument("--chunk-rows", type=int, default=2000)
    a = p.parse_args()
    _, test_csv = mnist_csv(a.data)
    big = mnist_rows(a.data, a.rows)
    work = tempfile.mkdtemp(prefix="digits-fair-")
    small = os.path.join(work, "small.csv")
    with open(test_csv, "rb") as f:
        lines = f.read().split(b"\n")
    with open(small, "wb") as f:
        f.write(b"\n".join(lines[:301]) + b"\n")

    os.environ.update(DIGITS_HOME=os.path.join(work, "home"), DIGITS_STORAGE=os.path.join(work, "storage"),
                      DIGITS_PREDICT_CONCURRENCY="2", DIGITS_CHUNK_ROWS=str(a.chunk_rows))
    os.environ.pop("DIGITS_BROKER_URL", None)
    from worker import settings
    from worker.app import configure
    from worker.client import submit_prediction
    from worker.stack.embedded import Stack

    model_path = sample_model(os.path.join(work, "model.npz"))
    s = settings.load()
    stack = Stack(s, record=False, log=lambda *x: None).start()
    try:
        app = configure(stack.url)

        def submit(path, out):
            """-> (job, submit time); the latency is then the manifest's finished_at minus it."""
            t0 = time.time()
            return submit_prediction(path, model_path, os.path.join(work, out), app=app, settings=s), t0

        def latency(submitted):
            job, t0 = submitted
            return job.wait(poll=0.1)["finished_at"] - t0

        latency(submit(small, "warm.csv"))  # model cache and connections warm
        idle_jobs = [submit(small, f"idle{i}.csv") for i in range(a.small)]
        idle_lat = [latency(j) for j in idle_jobs]
        idle = statistics.median(idle_lat)
        alone = latency(submit(big, "alone.csv"))
        big_job = submit(big, "big.csv")
        smalls = [submit(small, f"small{i}.csv") for i in range(a.small)]  # as 30 commands would
        lat = [latency(j) for j in smalls]
        shared = latency(big_job)
    finally:
        stack.stop()
    med = statistics.median(lat)
    print(f"window {s.job_window} chunks per job; big job {a.rows} rows in chunks of {a.chunk_rows}")
    print(f"{a.small} small jobs on an idle queue: median {idle:.3f} s, max {max(idle_lat):.3f} s")
    print(f"{a.small} small jobs behind the big one: median {med:.3f} s, max {max(lat):.3f} s "
          f"-> {med / idle:.2f}x idle (target <= 2x: {'holds' if med <= 2 * idle else 'misses'})")
    print(f"big job alone {alone:.2f} s, with the small jobs {shared:.2f} s "
          f"-> {shared / alone:.2f}x (target <= 1.10x: {'holds' if shared <= 1.1 * alone else 'misses'})")
    figures("fairness", idle_s=idle, behind_s=med, small_ratio=med / idle, alone_s=alone, shared_s=shared,
            big_ratio=shared / alone)


if __name__ == "__main__":
    main()

"""Flat memory: peak RSS of a predict worker process and of the client, 100,000 vs 1,000,000 rows.

    python bench/bench_memory.py [--data DIR] [--rows 100000] [--big-rows 1000000]

For each size, a fresh `digits up --no-flower` (2 predict worker processes; a fresh stack,
since a process's peak RSS only grows) and one `digits predict` of a CSV of that many rows
(the 10,000 MNIST test images repeated) as a subprocess. Measured:
  - worker: the largest VmHWM among the predict worker's processes (the Celery main process
    and its pool processes, which read, parse and predict the chunks and assemble the output);
  - client: the `digits predict` process's own peak RSS (os.wait4's ru_maxrss);
  - the big job's rows/s, from its submission to its output (the job's own records) and from
    the command's start to its exit.
Target: each peak at the big size within 10% of the small size's.
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.bench_predict import bench_model, latest_job  # noqa: E402
from bench.common import Up, digits_argv, figures, mnist_rows, parser, run_child, vm_hwm_mb  # noqa: E402


def one_size(work, csv, model_path, rows):
    home = os.path.join(work, f"home-{rows}")
    with Up(home, DIGITS_PREDICT_CONCURRENCY=2) as up:
        wall, client_mb, code, _, err = run_child(
            digits_argv("predict", csv, "--model", model_path, "--out", os.path.join(work, f"out-{rows}.csv")),
            up.env)
        assert code == 0, err
        worker_mb = vm_hwm_mb(up.worker_pids("worker-predict"))
        job, manifest = latest_job(home)
    assert manifest["rows_ok"] == rows, manifest
    job_s = manifest["finished_at"] - job["submitted_at"]
    return {"rows": rows, "worker_mb": worker_mb, "client_mb": client_mb, "cli_s": wall, "job_s": job_s,
            "chunks": manifest["chunks"]}


def main():
    p = parser(__doc__)
    p.add_argument("--rows", type=int, default=100000)
    p.add_argument("--big-rows", type=int, default=1000000)
    a = p.parse_args()
    small = mnist_rows(a.data, a.rows)
    big = mnist_rows(a.data, a.big_rows)
    work = tempfile.mkdtemp(prefix="digits-bench-memory-")
    model_path, _ = bench_model(work)
    r_small = one_size(work, small, model_path, a.rows)
    r_big = one_size(work, big, model_path, a.big_rows)
    for r in (r_small, r_big):
        print(f"{r['rows']:>9,} rows ({r['chunks']} chunks): peak RSS worker {r['worker_mb']:.0f} MB, "
              f"client {r['client_mb']:.0f} MB; job {r['job_s']:.2f} s, command {r['cli_s']:.2f} s")
    wr, cr = r_big["worker_mb"] / r_small["worker_mb"], r_big["client_mb"] / r_small["client_mb"]
    print(f"growth {a.rows:,} -> {a.big_rows:,} rows: worker x{wr:.3f}, client x{cr:.3f} (target <= x1.10)")
    print(f"{a.big_rows:,}-row job: {a.big_rows / r_big['job_s']:,.0f} rows/s from submission to output, "
          f"{a.big_rows / r_big['cli_s']:,.0f} rows/s from the command's start to its exit")
    figures("memory", small=r_small, big=r_big, worker_growth=wr, client_growth=cr,
            big_rows_per_s=a.big_rows / r_big["job_s"], big_cli_rows_per_s=a.big_rows / r_big["cli_s"])
    print(json.dumps({"small": r_small, "big": r_big}))


if __name__ == "__main__":
    main()

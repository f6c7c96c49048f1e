"""`digits predict` from the command line against the single-process seed style, in the same run.

    python bench/bench_predict.py [--data DIR] [--rows 100000] [--rounds 5]

Starts `digits up --no-flower` (a subprocess, 2 predict worker processes) and then, for
--rounds rounds, interleaves:
  - seed style: pandas read_csv, float64 features-by-samples forward pass, to_csv, as the
    command a seed-project user runs (`python predict.py`: a fresh interpreter importing
    pandas, start to exit), the baseline of the ratio; and the same in this process
    (pandas already imported, no start-up), printed beside it;
  - ours: `digits predict test.csv --model model.npz --out out.csv` as a subprocess, as a
    user runs it against the running stack, timed from its start to its exit;
  - `digits predict ... --local` (the same parser and model in one process, no queue), the
    baseline of the send path's cost: ours in rows/s and its ratio against --local.
It prints the medians and their ratios, then the breakdown of the jobs into stages (medians
over the rounds), from the job's own records (job.json, the chunk marks' timings in the
manifest) and the subprocess's start and end:
  interpreter    the command's start until its first line runs
  imports        the modules `digits predict` imports (NumPy, Celery, kombu, redis-py and
                 ours: every task is sent through the Celery app)
  submission     the rest until the job record is written: model check, plan, output claim
  queue latency  sending the first window of chunks until a worker starts the first
  chunks         first chunk started to last chunk finished (2 processes); inside it, the
                 CPU seconds of reading+parsing, the forward pass and writing the chunk results
  assemble       last chunk finished to the output written (the workers write --out itself)
  to the exit    the client hearing the end, reporting, exiting
(The breakdown comes from one more run per round of the same command with its imports
done first and timed: the same work in an order that can be timed from outside.)
It also prints the floor this machine sets: interpreter + imports + submission, plus the
chunks' parse and forward-pass CPU seconds spread over the 2 cores, and the best ratio
that floor allows. A warm-up job runs first (bytecode written, the workers' model cache filled). The labels
are checked against --local's output (byte for byte) and against the seed style's.
"""
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.common import (Up, digits_argv, figures, median, mnist_rows, parser,  # noqa: E402
                          run_child, save_seed_weights, seed_predict, seed_script_argv, timed, user_env)


def bench_model(work):
    """A small trained model (faithful recipe, 3 epochs on the bundled sample) -> (path, seed weights)."""
    from model import checkpoint
    from model.data.samples import load_sample
    from model.train import Trainer, make_config
    s = load_sample()
    t = Trainer(make_config("faithful", epochs=3), s["train_x"], s["train_y"])
    t.run()
    path = os.path.join(work, "model.npz")
    checkpoint.save_model(checkpoint.make_model(t.params, t.mean, t.std, recipe="faithful"), path)
    weights = (t.params["W1"].T.astype(np.float64), t.params["b1"][:, None].astype(np.float64),
               t.params["W2"].T.astype(np.float64), t.params["b2"][:, None].astype(np.float64),
               float(t.mean[0]), float(t.std[0]))
    return path, weights


def latest_job(home):
    jobs = os.path.join(home, "storage", "jobs")
    job_id = max(os.listdir(jobs), key=lambda j: os.path.getmtime(os.path.join(jobs, j)))
    with open(os.path.join(jobs, job_id, "job.json")) as f:
        job = json.load(f)
    with open(os.path.join(jobs, job_id, "manifest.json")) as f:
        return job, json.load(f)


# `digits predict` with its imports done first and the times between written to stderr, for
# the breakdown: the same work as the plain command, in an order that can be timed.
# The imports are those the command makes (the Celery app it sends through among them); any
# heavy module it loads besides is named.
TRACED = ("import time, sys; t_code = time.time(); "
          "import worker.cli, worker.cli.predict, worker.cli.progress, worker.client.submission, worker.app, "
          "worker.stack.broker, model.checkpoint, model.data.sources, model.registry.versions, tasks.queueing, tasks.events; "
          "t_imports = time.time(); from worker.cli import main, _exit_now; rc = main(sys.argv[1:]); "
          "heavy = [m for m in ('celery', 'kombu', 'redis', 'fsspec', 'pandas', 'PIL') if m in sys.modules]; "
          "print('TRACE', t_code, t_imports, ','.join(heavy) or '-', file=sys.stderr, flush=True); _exit_now(rc)")


def stages(started, ended, job, manifest, trace):
    """One job's stages in seconds (see the module doc); started/ended: time.time() around the
    traced command; trace: its (t_code, t_imports)."""
    t = manifest["timings"]
    sub = job["submitted_at"]
    asm_end = t["assemble_started_at"] + t["assemble_seconds"]
    t_code, t_imports = trace
    return {"interpreter start": t_code - started,
            "imports (NumPy and ours)": t_imports - t_code,
            "submission (model check, plan, records)": sub - t_imports,
            "queue latency (to the first chunk's start)": t["first_chunk_started_at"] - sub,
            "chunks, wall (2 processes)": t["last_chunk_finished_at"] - t["first_chunk_started_at"],
            "  read + parse, CPU s": t["read_seconds"],
            "  forward pass, CPU s": t["predict_seconds"],
            "  result writes, CPU s": t["write_seconds"],
            "assemble (incl. its queueing)": asm_end - t["last_chunk_finished_at"],
            "to the exit (hear the end, report, exit)": ended - asm_end}


def main():
    p = parser(__doc__)
    p.add_argument("--rows", type=int, default=100000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    import time
    csv = mnist_rows(a.data, a.rows)
    work = tempfile.mkdtemp(prefix="digits-bench-predict-")
    model_path, weights = bench_model(work)
    home = os.path.join(work, "home")
    out = os.path.join(work, "out.csv")
    argv = digits_argv("predict", csv, "--model", model_path, "--out", out)
    seed_argv = seed_script_argv(csv, os.path.join(work, "seed-script.csv"),
                                 save_seed_weights(weights, os.path.join(work, "seed-weights.npz")))
    local = os.path.join(work, "local.csv")
    local_argv = digits_argv("predict", csv, "--model", model_path, "--out", local, "--local")
    local_env = user_env(os.path.join(work, "home-local"))
    seed_s, seed_in_s, ours_s, local_s, rows, heavy = [], [], [], [], [], set()
    with Up(home, DIGITS_PREDICT_CONCURRENCY=2) as up:
        env = up.env
        wall, _, code, _, err = run_child(argv, env)  # warm-up: bytecode, the workers' model cache
        assert code == 0, err
        for r in range(a.rounds):
            base_labels, s_in = timed(seed_predict, csv, os.path.join(work, "seed.csv"), weights)
            seed_in_s.append(s_in)
            s, _, code, _, err = run_child(seed_argv, env)
            assert code == 0, err
            seed_s.append(s)
            wall, _, code, _, err = run_child(argv, env)
            assert code == 0, err
            ours_s.append(wall)
            wall_local, _, code, _, err = run_child(local_argv, local_env)
            assert code == 0, err
            local_s.append(wall_local)
            started = time.time()
            _, _, code, _, err = run_child([sys.executable, "-c", TRACED, *argv[3:]], env)
            ended = time.time()
            assert code == 0, err
            trace = [ln for ln in err.splitlines() if ln.startswith("TRACE")][-1].split()[1:]
            heavy.add(trace.pop())
            rows.append(stages(started, ended, *latest_job(home), [float(x) for x in trace]))
            print(f"round {r + 1}: seed style {s:.3f} s (in-process {s_in:.3f} s), digits predict {wall:.3f} s "
                  f"({a.rows / wall:,.0f} rows/s), --local {wall_local:.3f} s, ratio {s / wall:.2f}x "
                  f"({s_in / wall:.2f}x)", flush=True)
    with open(out, "rb") as f1, open(local, "rb") as f2:
        identical = f1.read() == f2.read()
    import pandas as pd
    ours_labels = pd.read_csv(out)["Label"].to_numpy()
    agree = float(np.mean(ours_labels == base_labels))

    size_mb = os.path.getsize(csv) / 1e6
    seed_m, seed_in_m, ours_m = median(seed_s), median(seed_in_s), median(ours_s)
    print(f"\n{a.rows} rows ({size_mb:.0f} MB), `digits up` with 2 predict worker processes, "
          f"{a.rounds} interleaved rounds, medians:")
    print(f"seed style, a script (pandas read_csv, float64, to_csv; start to exit): {seed_m:.3f} s")
    print(f"seed style in this process (no interpreter start, pandas imported):    {seed_in_m:.3f} s")
    print(f"digits predict (a subprocess, start to exit):                          {ours_m:.3f} s = "
          f"{a.rows / ours_m:,.0f} rows/s")
    print(f"ratio {seed_m / ours_m:.2f}x against the script (target 5x); "
          f"{seed_in_m / ours_m:.2f}x against the in-process seed style")
    local_m = median(local_s)
    print(f"send path: digits predict {a.rows / ours_m:,.0f} rows/s (target >= 200,000 at 1,000,000 rows); "
          f"--local (one process, no queue) {a.rows / local_m:,.0f} rows/s; ratio {local_m / ours_m:.2f}x")
    print(f"output == --local output byte for byte: {identical}; labels agree with the float64 "
          f"seed style on {agree:.5f}")
    print(f"\nheavy modules the command loaded besides NumPy: {', '.join(sorted(heavy))}")
    print("stages of a job (medians over the rounds, seconds):")
    st = {k: median([r[k] for r in rows]) for k in rows[0]}
    for k, v in st.items():
        print(f"  {k:<48} {v:7.3f}")
    keys = list(st)
    floor = st[keys[0]] + st[keys[1]] + st[keys[2]] + (st["  read + parse, CPU s"] + st["  forward pass, CPU s"]) / 2
    print(f"floor: interpreter + imports + submission + (parse + forward CPU) / 2 cores = {floor:.3f} s: "
          f"at best {seed_m / floor:.2f}x against the script, {seed_in_m / floor:.2f}x in-process")
    figures("predict", rows=a.rows, mb=round(size_mb), seed_s=seed_m, seed_inprocess_s=seed_in_m, ours_s=ours_m,
            ours_rows_per_s=a.rows / ours_m, local_s=local_m, ratio_local=local_m / ours_m,
            ratio=seed_m / ours_m, ratio_inprocess=seed_in_m / ours_m,
            identical=identical, agreement=agree, stages=st, floor_s=floor, best_ratio=seed_m / floor,
            best_ratio_inprocess=seed_in_m / floor)


if __name__ == "__main__":
    main()

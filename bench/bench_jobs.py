"""How long `digits jobs --json` takes with many jobs on storage (the index: one small
object per job under jobs-index/), against reading every job's folder as before the index.

    python bench/bench_jobs.py [--jobs 1000] [--repeat 5]

Writes N ended job records (half predictions, half training runs, each with its job.json,
manifest and index entry) to a temporary storage folder, then times, as median of the
repeats: the whole command as a new user runs it (`digits jobs --json`, a fresh process:
interpreter start and imports included), tasks.index.list_index in this process, and the
baseline (listing jobs/ and reading every job.json and manifest.json).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tasks import index, jobfiles, records  # noqa: E402
from tasks.states import JobState


def write_jobs(root, n):
    """n ended jobs, half predictions, half training runs, one second apart."""
    now = time.time()
    history = [{"epoch": e, "train_loss": 0.1, "val_accuracy": 0.97, "val_loss": 0.1, "train_accuracy": 0.98,
                "lr": 0.05, "seconds": 1.0} for e in range(1, 16)]
    for i in range(n):
        t = now - i
        if i % 2:
            rec = records.PredictJob(job_id=f"predict-{i:06d}", input="/data/test.csv", output=f"/out/{i}.csv",
                                  download_to=f"/out/{i}.csv", chunks=3, input_kind="csv", window=4,
                                  model={"ref": "/m.npz", "version": "abc", "name": "digits",
                                         "registry_version": "1"}, submitted_at=t)
            rec.write(root)
            counts = {"rows_in": 28000, "rows_ok": 28000, "rows_bad": 0, "rows_failed": 0, "rows_skipped": 0,
                      "failed_chunks": [], "output": rec.output, "errors": None}
            manifest = rec.manifest(counts, JobState.SUCCESS, 3, 1.0, 0.1)
        else:
            rec = records.TrainJob(job_id=f"train-{i:06d}", name="digits", data="/data/train.csv",
                                config={"recipe": "plain", "epochs": 15}, submitted_at=t, output="models/digits")
            rec.write(root)
            manifest = rec.manifest(JobState.SUCCESS, history, 0, 5.0, registered={
                "version": str(i), "path": f"/s/models/digits/{i}", "model": "/m.npz", "report": "/r.html",
                "promotion": {"promoted": True, "reason": "better"}})
        records.write_manifest(root, rec.job_id, manifest)


def read_every_folder(root):
    """The baseline: what a listing without an index reads."""
    out = []
    for job_id in os.listdir(os.path.join(root, "jobs")):
        out.append((records.read_job(root, job_id), jobfiles.read_manifest(root, job_id)))
    return out


def median_seconds(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1000, help="job records to list")
    p.add_argument("--repeat", type=int, default=5, help="runs of each measure (the median is printed)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "storage")
        t0 = time.perf_counter()
        write_jobs(root, a.jobs)
        print(f"wrote {a.jobs} ended jobs in {time.perf_counter() - t0:.1f}s")
        env = dict(os.environ, DIGITS_HOME=os.path.join(tmp, "home"), DIGITS_STORAGE=root,
                   PYTHONPATH=os.path.dirname(HERE))
        env.pop("DIGITS_BROKER_URL", None)
        command = [sys.executable, "-m", "worker.cli", "jobs", "--json"]

        def cli():
            r = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            assert len(json.loads(r.stdout)) == a.jobs

        cli()  # warm the page cache once
        wall = median_seconds(cli, a.repeat)
        listing = median_seconds(lambda: index.list_index(root), a.repeat)
        baseline = median_seconds(lambda: read_every_folder(root), a.repeat)
        empty = os.path.join(tmp, "empty")
        startup = median_seconds(lambda: subprocess.run(command, env=dict(env, DIGITS_STORAGE=empty),
                                                        capture_output=True, check=True), a.repeat)
    print(f"`digits jobs --json` with {a.jobs} jobs: {wall:.3f} s end to end (median of {a.repeat}; "
          f"the same command on empty storage: {startup:.3f} s)")
    print(f"tasks.index.list_index: {listing * 1000:.0f} ms; reading every job folder instead: "
          f"{baseline * 1000:.0f} ms ({baseline / listing:.1f}x)")
    print("limit 1 s:", "met" if wall <= 1.0 else "MISSED")


if __name__ == "__main__":
    main()

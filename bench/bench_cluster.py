"""1 worker host vs 2: a 1,000,000-row CSV predicted through the queue on shared-folder storage.

Builds the multi-host cluster of tests/cluster/hosts.py (network namespaces; Redis with TLS
and an ACL user; each worker host pinned to its own core, one predict process each), puts
the CSV and the model in the shared folder (the NFS stand-in), and times
`digits predict` from the client host end to end (plan, chunks, assemble, exit), first with
one worker host, then with two, each time after a small warm-up job (so every worker
process has the model loaded, as on a cluster that is up). Prints both times and the
ratio of the best and of the median rounds. Needs root (see hosts.py).

    python bench/bench_cluster.py [--rows 1000000] [--rounds 1]
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.common import figures, mnist_csv, parser, mnist_rows, sample_model  # noqa: E402
from tests.cluster.hosts import Cluster, remove_stale  # noqa: E402


def timed_predict(cluster, src, model, out, chunk_rows):
    """Wall seconds of `digits predict` on the client -> (seconds, the job's manifest timings)."""
    import json
    import re
    t0 = time.perf_counter()
    r = cluster.run("client", ["predict", src, "--model", model, "--out", out, "--chunk-rows", chunk_rows],
                    timeout=1800)
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"predict failed: {r.stderr[-2000:]}")
    job_id = re.search(r"prediction job (\S+)", r.stderr).group(1)
    manifest = json.loads((cluster.shared / "jobs" / job_id / "manifest.json").read_text())
    return seconds, manifest["timings"]


def main():
    p = parser(__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=5,
                   help="rounds of (1 host, 2 hosts); the ratio of the best times and of the medians are printed")
    p.add_argument("--chunk-rows", type=int, default=10_000, help="rows per chunk (DIGITS_CHUNK_ROWS's default)")
    a = p.parse_args()
    reason = Cluster.unavailable()
    if reason:
        raise SystemExit(f"cannot build the cluster: {reason}")
    _, test_csv = mnist_csv(a.data)
    copies = max(1, a.rows // 10_000)
    big = mnist_rows(a.data, a.rows)
    remove_stale()
    base = tempfile.mkdtemp(prefix="digits-bench-cluster-", dir=os.path.dirname(os.path.abspath(big)))
    cluster = Cluster.create(base)
    try:
        src = cluster.shared / "in" / "big.csv"
        src.parent.mkdir(parents=True)
        os.link(big, src)  # same file system: the shared folder holds it without a copy
        warm = cluster.shared / "in" / "warm.csv"
        os.link(test_csv, warm)
        model = cluster.shared / "model.npz"
        sample_model(str(model))
        (cluster.shared / "out").mkdir()
        print(f"{copies * 10_000:,} rows ({os.path.getsize(src) / 1e9:.2f} GB) on shared-folder storage, "
              f"chunks of {a.chunk_rows:,} rows, one predict process per host, each host on its own core")
        times = {1: [], 2: []}
        for r in range(a.rounds):
            for hosts in (("w1",), ("w1", "w2")):
                # the watchdog's census (inspect every second in the tests) would cost both hosts CPU
                cluster.start_workers(cluster.shared, hosts=hosts, train=False, DIGITS_WATCHDOG_INTERVAL=0)
                # warm the workers as a running cluster's are (model loaded and cached in every
                # worker process): 10,000 rows in chunks of 1,000 reach every host
                timed_predict(cluster, warm, model, cluster.shared / "out" / "warm.csv", 1000)
                secs, t = timed_predict(cluster, src, model, cluster.shared / "out" / f"out-{len(hosts)}-{r}.csv",
                                        a.chunk_rows)
                times[len(hosts)].append(secs)
                print(f"round {r + 1}: {len(hosts)} host(s): {secs:.1f} s ({copies * 10_000 / secs:,.0f} rows/s); "
                      f"chunks {t['chunk_seconds']:.1f} s of work, assemble {t['assemble_seconds']:.1f} s, "
                      f"submit to manifest {t['wall_seconds']:.1f} s", flush=True)
        one, two = min(times[1]), min(times[2])
        mid1, mid2 = sorted(times[1])[len(times[1]) // 2], sorted(times[2])[len(times[2]) // 2]
        same = all(open(cluster.shared / "out" / f"out-1-{r}.csv", "rb").read()
                   == open(cluster.shared / "out" / f"out-2-{r}.csv", "rb").read() for r in range(a.rounds))
        print(f"best: 1 host {one:.1f} s, 2 hosts {two:.1f} s, speed-up {one / two:.2f}x; medians: "
              f"{mid1:.1f} s, {mid2:.1f} s, {mid1 / mid2:.2f}x (target 1.8x); outputs identical: {same}")
        figures("cluster", rows=copies * 10_000, rounds=a.rounds, best1_s=one, best2_s=two, best_ratio=one / two,
                median1_s=mid1, median2_s=mid2, median_ratio=mid1 / mid2, identical=same)
    finally:
        cluster.destroy()
        import shutil
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Throughput of model.csvparse.parse_rows against np.loadtxt on ~100 MB of MNIST-like rows.

    python bench/bench_csvparse.py [--mb 100] [--repeat 5]

Rows are label,pixel0..783 (785 values, as in a Kaggle train.csv) built from the real MNIST
test images when /work/shared/data/mnist-test-images.npz exists, otherwise from synthetic
mostly-zero images. Prints the best wall-clock MB/s of each over --repeat runs.
"""
import argparse
import io
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model.csvparse import parse_rows  # noqa: E402

MNIST = "/work/shared/data/mnist-test-images.npz"


def images():
    """(n, 784) uint8 digit images."""
    if os.path.exists(MNIST):
        return np.load(MNIST)["x"].reshape(-1, 784)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10000, 784), dtype=np.uint8)  # (10000, 784)
    x[rng.random(x.shape) < 0.8] = 0  # MNIST is about 80% zeros
    return x


def build(mb):
    """~mb megabytes of CSV rows (bytes) and the (n, 785) uint8 values they hold."""
    x = images()
    rows = np.hstack([(np.arange(len(x)) % 10).astype(np.uint8)[:, None], x])  # (n, 785)
    one = ("\n".join(",".join(map(str, r)) for r in rows.tolist()) + "\n").encode()
    times = max(1, int(np.ceil(mb * 1e6 / len(one))))
    return one * times, np.tile(rows, (times, 1))


def best_time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    data, want = build(args.mb)
    mb = len(data) / 1e6
    print(f"{mb:.1f} MB, {len(want)} rows of 785 values")

    t_fast, (values, errors) = best_time(lambda: parse_rows(data, 785), args.repeat)
    assert not errors and np.array_equal(values, want), "parse_rows disagrees with the source"
    step = 20_000_000  # the same bytes in ~20 MB blocks of whole lines, as a worker reads them
    cuts = [0]
    while cuts[-1] < len(data):
        nl = data.find(b"\n", cuts[-1] + step)
        cuts.append(len(data) if nl < 0 else nl + 1)
    t_blocks, _ = best_time(lambda: [parse_rows(data[a:b], 785) for a, b in zip(cuts, cuts[1:])],
                            args.repeat)
    t_slow, ref = best_time(lambda: np.loadtxt(io.BytesIO(data), dtype=np.uint8, delimiter=","),
                            max(1, args.repeat // 2))
    assert np.array_equal(ref, want), "np.loadtxt disagrees with the source"

    print(f"parse_rows, one call:       {mb / t_fast:8.0f} MB/s  ({t_fast * 1e3:.0f} ms)")
    print(f"parse_rows, ~20 MB blocks:  {mb / t_blocks:8.0f} MB/s  ({t_blocks * 1e3:.0f} ms)")
    print(f"np.loadtxt(dtype=uint8):    {mb / t_slow:8.0f} MB/s  ({t_slow * 1e3:.0f} ms)")
    print(f"ratio parse_rows / loadtxt: {t_slow / t_fast:8.1f}x")
    import json
    print("FIGURES csvparse " + json.dumps({"mb_s": mb / t_fast, "mb_s_blocks": mb / t_blocks,
                                            "loadtxt_mb_s": mb / t_slow, "ratio": t_slow / t_fast}), flush=True)


if __name__ == "__main__":
    main()

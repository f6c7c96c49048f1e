"""Throughput of model.data.csvparse.parse_rows against np.loadtxt on ~100 MB of MNIST-like rows,
then of the whole CSV read path (model.data.csvfile.read_csv_range: windows, dialect, parse) on test
files as tools write them, and the memory of 8 MB of blank lines.

    python bench/bench_csvparse.py [--mb 100] [--repeat 5] [--formats-rows 20000]

Rows are label,pixel0..783 (785 values, as in a Kaggle train.csv) built from the real MNIST
test images when /work/shared/data/mnist-test-images.npz exists, otherwise from synthetic
mostly-zero images. Prints the best wall-clock MB/s of each over --repeat runs; for the
read path, rows/s per file kind (bulk prediction needs >= 200,000 rows/s on a plain file).
"""
import argparse
import io
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model.data.csvparse import parse_rows  # noqa: E402

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
    ap.add_argument("--formats-rows", type=int, default=20000)
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
    data = want = values = ref = None  # the 100 MB of text freed before the next measures
    formats(args.formats_rows, args.repeat)
    blank_lines_memory()


def tool_files(x):
    """kind -> bytes of the test images (n, 784) as a tool writes them."""
    import csv
    import pandas as pd
    df = pd.DataFrame(x, columns=[f"pixel{i}" for i in range(784)])
    out = {"plain": df.to_csv(index=False).encode()}
    out["pandas index"] = df.to_csv().encode()
    out["QUOTE_ALL"] = df.to_csv(index=False, quoting=csv.QUOTE_ALL).encode()
    out["semicolon"] = df.to_csv(index=False, sep=";").encode()
    out["trailing comma"] = out["plain"].replace(b"\n", b",\n")
    out["integral floats"] = df.astype(float).to_csv(index=False).encode()
    blank = out["plain"].split(b"\n")
    out["blank line every 100"] = b"\n".join(ln + (b"\n" if i % 100 == 0 else b"") for i, ln in enumerate(blank))
    return out


def formats(rows, repeat):
    """Rows/s of the whole read path (what a prediction chunk runs) per file kind."""
    import tempfile
    from model.data import csvfile
    x = np.tile(images()[:10000], (max(1, -(-rows // 10000)), 1))[:rows]  # (rows, 784)
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for kind, raw in tool_files(x).items():
            ref = os.path.join(tmp, kind.replace(" ", "_") + ".csv")
            with open(ref, "wb") as f:
                f.write(raw)
            try:
                layout = csvfile.read_csv_layout(ref)
            except Exception as e:  # a version of the reader that does not know this kind
                print(f"read path, {kind:22s}: not read ({e})")
                continue
            t, block = best_time(lambda: csvfile.read_csv_range(layout, layout.data_start, layout.size), repeat)
            ok = not block.errors and np.array_equal(block.pixels, x)
            results[kind] = rows / t
            print(f"read path, {kind:22s}: {rows / t:10,.0f} rows/s  {len(raw) / t / 1e6:6.0f} MB/s"
                  + ("" if ok else "  (WRONG VALUES)"))
    import json
    print("FIGURES csvread " + json.dumps(results), flush=True)


def blank_lines_memory():
    """Peak traced memory of reading a file of one row, 8 MB of blank lines and one row."""
    import json
    import tempfile
    import tracemalloc
    from model.data import csvfile
    row = ",".join(["7"] * 784).encode() + b"\n"
    with tempfile.TemporaryDirectory() as tmp:
        ref = os.path.join(tmp, "blank.csv")
        with open(ref, "wb") as f:
            f.write(",".join(f"pixel{i}" for i in range(784)).encode() + b"\n" + row + b"\n" * (8 << 20) + row)
        layout = csvfile.read_csv_layout(ref)
        tracemalloc.start()
        t = time.perf_counter()
        block = csvfile.read_csv_range(layout, layout.data_start, layout.size)
        t = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(f"8 MB of blank lines: {len(block)} records, {len(block.errors)} errors, peak traced "
          f"{peak / 1e6:.1f} MB in {t:.2f} s (target: under 250 MB in total)")
    print("FIGURES csvblank " + json.dumps({"records": len(block), "peak_mb": peak / 1e6, "seconds": t}), flush=True)


if __name__ == "__main__":
    main()

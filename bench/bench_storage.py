"""Local folder vs an S3 stand-in (moto's server on 127.0.0.1), for a CSV and an image folder.

For each input and each storage: the upload a client does (storage.upload), the plan
(sources.open_source) with the number of S3 requests it made and how many rounds of
requests that was, and reading every chunk as the workers do (source.read). S3 requests
are counted from the stand-in's access log. moto is slower than a real S3 per request and
has no network latency: read the ratios, not the seconds.

    python bench/bench_storage.py [--rows 60000] [--images 2500]
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.common import mnist_csv, parser, repeated_csv  # noqa: E402


def start_moto():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
                      FSSPEC_S3_ENDPOINT_URL=endpoint)
    import fsspec.config
    fsspec.config.set_conf_env(fsspec.config.conf)
    import s3fs
    for _ in range(100):
        try:
            s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True).mkdir("bench")
            break
        except Exception:
            time.sleep(0.2)
    return proc, log.name


def requests(log):
    """Timestamps (to the second) of the S3 requests logged so far."""
    return re.findall(r"\[(\d\d/\w+/\d{4} [\d:]+)\] \"(?:GET|PUT|HEAD|POST|DELETE)", open(log).read())


def measure(kind, src, root, log):
    from model import sources, storage
    row = {}
    target = storage.join(root, "inputs", kind)
    t0 = time.perf_counter()
    storage.upload(src, target if os.path.isdir(src) else target + ".csv")
    row["upload"] = time.perf_counter() - t0
    ref = target if os.path.isdir(src) else target + ".csv"
    before = len(requests(log)) if log else 0
    t0 = time.perf_counter()
    source = sources.open_source(ref, 10000, 1000)
    row["plan"] = time.perf_counter() - t0
    row["plan_requests"] = (len(requests(log)) - before) if log else None
    t0 = time.perf_counter()
    n = sum(len(source.read(i)) for i in range(len(source.chunks)))
    row["read"] = time.perf_counter() - t0
    row["records"], row["chunks"] = n, len(source.chunks)
    return row


def main():
    p = parser(__doc__)
    p.add_argument("--rows", type=int, default=60_000)
    p.add_argument("--images", type=int, default=2500, help="image files (the bundled sample's training folder)")
    a = p.parse_args()
    _, test_csv = mnist_csv(a.data)
    csv = repeated_csv(test_csv, os.path.join(a.data, f"test-x{max(1, a.rows // 10000)}.csv"), max(1, a.rows // 10000))
    from model.samples import write_sample
    images = write_sample(os.path.join(a.data, "sample"))["images_train"]
    moto, log = start_moto()
    try:
        local_root = tempfile.mkdtemp(prefix="digits-bench-storage-")
        results = {}
        for kind, src in (("csv", csv), ("images", images)):
            results[(kind, "local")] = measure(kind, src, local_root, None)
            results[(kind, "s3")] = measure(kind, src, "s3://bench/digits", log)
        print(f"{'input':<8} {'storage':<8} {'records':>8} {'chunks':>6} {'upload s':>9} {'plan s':>7} "
              f"{'plan requests':>13} {'read s':>7} {'read vs local':>13}")
        for (kind, where), r in results.items():
            ratio = r["read"] / results[(kind, "local")]["read"]
            print(f"{kind:<8} {where:<8} {r['records']:>8} {r['chunks']:>6} {r['upload']:>9.2f} {r['plan']:>7.3f} "
                  f"{'' if r['plan_requests'] is None else r['plan_requests']:>13} {r['read']:>7.2f} {ratio:>12.1f}x")
    finally:
        moto.kill()
        moto.wait()


if __name__ == "__main__":
    main()

"""Local folder vs an S3 stand-in (moto's server on 127.0.0.1), for a CSV and an image folder.

For each input: read where it lies (a local folder or file: plan and read, nothing to
upload), against the S3 stand-in: the upload a client does (worker.client.staging.stage_input: a
file in parts, an image folder packed by model.data.imagepack into two objects), the plan
(sources.open_source) with the number of S3 requests it made, and reading every chunk as
the workers do (source.read). S3 requests are counted from the stand-in's access log. moto
is slower than a real S3 per request and has no network latency: read the ratios, not the
seconds. Target: the image folder on S3 within 3x of the local folder.

    python bench/bench_storage.py [--rows 60000] [--images 10000]
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.common import figures, mnist_rows, parser  # noqa: E402


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
    """root None: read src where it lies; else stage it under root as a client does, then read."""
    from model import storage
    from model.data import imagefolder, imagepack, sources
    row = {"upload": 0.0}
    ref = src
    if root is not None:
        ref = storage.join(root, "inputs", kind) + ("" if os.path.isdir(src) else ".csv")
        t0 = time.perf_counter()
        if os.path.isdir(src):
            imagepack.pack(src, ref, imagefolder.IMAGE_TYPES, imagefolder.MAX_IMAGE_BYTES)
        else:
            storage.upload(src, ref)
        row["upload"] = time.perf_counter() - t0
    before = len(requests(log)) if log else 0
    t0 = time.perf_counter()
    source = sources.open_source(ref, 10000, 1000)
    row["plan"] = time.perf_counter() - t0
    row["plan_requests"] = (len(requests(log)) - before) if log else None
    before = len(requests(log)) if log else 0
    t0 = time.perf_counter()
    n = sum(len(source.read(i)) for i in range(len(source.chunks)))
    row["read"] = time.perf_counter() - t0
    row["read_requests"] = (len(requests(log)) - before) if log else None
    row["records"], row["chunks"] = n, len(source.chunks)
    return row


def main():
    p = parser(__doc__)
    p.add_argument("--rows", type=int, default=60_000)
    p.add_argument("--images", type=int, default=10000, help="PNG files (MNIST test images, as bench_images writes them)")
    a = p.parse_args()
    csv = mnist_rows(a.data, a.rows)
    from bench.bench_images import mnist_images
    images = mnist_images(os.path.join(a.data, "images"), a.images)
    if len(os.listdir(images)) != a.images:  # exactly --images files: a folder of their links
        only = os.path.join(a.data, f"images-{a.images}")
        if not os.path.isdir(only):
            os.makedirs(only)
            for name in sorted(os.listdir(images))[:a.images]:
                os.symlink(os.path.join(images, name), os.path.join(only, name))
        images = only
    from model.data import imagefolder
    first = sorted(os.listdir(images))[0]
    imagefolder.decode_image(open(os.path.join(images, first), "rb").read(), first)  # PIL imported before any timing
    moto, log = start_moto()
    try:
        results = {}
        for kind, src in (("csv", csv), ("images", images)):
            results[(kind, "local")] = measure(kind, src, None, None)
            results[(kind, "s3")] = measure(kind, src, "s3://bench/digits", log)
        print(f"{'input':<8} {'storage':<8} {'records':>8} {'chunks':>6} {'upload s':>9} {'plan s':>7} "
              f"{'plan requests':>13} {'read s':>7} {'read requests':>13} {'read vs local':>13} {'all vs local':>12}")
        for (kind, where), r in results.items():
            base = results[(kind, "local")]
            ratio = r["read"] / base["read"]
            whole = (r["upload"] + r["plan"] + r["read"]) / (base["plan"] + base["read"])
            print(f"{kind:<8} {where:<8} {r['records']:>8} {r['chunks']:>6} {r['upload']:>9.2f} {r['plan']:>7.3f} "
                  f"{'' if r['plan_requests'] is None else r['plan_requests']:>13} {r['read']:>7.2f} "
                  f"{'' if r['read_requests'] is None else r['read_requests']:>13} {ratio:>12.1f}x {whole:>11.1f}x")
        img, img_local = results[("images", "s3")], results[("images", "local")]
        print(f"{a.images:,} PNGs on S3 (upload + plan + read) vs the local folder (plan + read): "
              f"{(img['upload'] + img['plan'] + img['read']) / (img_local['plan'] + img_local['read']):.1f}x; "
              f"read alone {img['read'] / img_local['read']:.1f}x (target 3x)")
        figures("storage", images=a.images, local_read_s=img_local["read"], s3_read_s=img["read"],
                s3_upload_s=img["upload"], s3_plan_s=img["plan"], local_plan_s=img_local["plan"],
                read_ratio=img["read"] / img_local["read"],
                whole_ratio=(img["upload"] + img["plan"] + img["read"]) / (img_local["plan"] + img_local["read"]))
    finally:
        moto.kill()
        moto.wait()


if __name__ == "__main__":
    main()

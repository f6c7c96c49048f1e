"""What one Redis costs per chunk as workers are added: many worker processes (solo pool,
one process each) against one Redis, a job of tiny chunks (so the broker, not the model,
is what is measured).

For each worker count: tasks per second, Redis CPU per task (from /proc, user + system),
Redis commands per task (INFO commandstats), Redis connections per worker process (INFO
clients), and each worker's seconds per task outside the chunk's own work. Then Redis
memory per queued chunk message (INFO memory, 5,000 messages queued with no worker).
docs/cluster.md's "A plan for 100+ workers" derives chunk sizes from these figures.

    python bench/bench_broker.py [--workers 1,2,4,8] [--chunks 600]
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.common import parser  # noqa: E402


def cpu_seconds(pid):
    """user + system CPU seconds of a process (/proc/<pid>/stat)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def commands(r):
    return sum(v["calls"] for k, v in r.info("commandstats").items())


def start_redis(folder):
    from worker.stack.embedded import redis_server_binary
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", folder], stdout=subprocess.DEVNULL)
    import redis
    r = redis.Redis(port=port)
    for _ in range(100):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}", r


def main():
    p = parser(__doc__)
    p.add_argument("--workers", default="1,2,4,8")
    p.add_argument("--chunks", type=int, default=600, help="chunks per job (10 rows each)")
    a = p.parse_args()
    folder = tempfile.mkdtemp(prefix="digits-bench-broker-")
    redis_proc, url, r = start_redis(folder)
    env = dict(os.environ, DIGITS_BROKER_URL=url, DIGITS_RESULT_BACKEND=url, DIGITS_HOME=folder,
               DIGITS_STORAGE=os.path.join(folder, "storage"), DIGITS_WATCHDOG_INTERVAL="0",
               OPENBLAS_NUM_THREADS="1", PYTHONPATH=os.path.join(os.path.dirname(__file__), ".."))
    os.environ.update({k: v for k, v in env.items() if k.startswith("DIGITS_")})
    from model import checkpoint
    from model.data.samples import load_sample, write_csv
    from model.data.block import PIXEL_COLUMNS
    from model.train import Trainer, make_config
    s = load_sample()
    t = Trainer(make_config("faithful", epochs=1), s["train_x"][:500], s["train_y"][:500])
    t.run()
    model = os.path.join(folder, "model.npz")
    checkpoint.save_model(checkpoint.make_model(t.params, t.mean, t.std, recipe="faithful"), model)
    csv = os.path.join(folder, "tiny.csv")
    write_csv(csv, PIXEL_COLUMNS, s["test_x"][:10].repeat(a.chunks, axis=0))
    from worker import settings
    from worker.app import configure
    from worker.client import submit_prediction
    print(f"one Redis ({url}), {a.chunks} chunks of 10 rows per job; solo-pool workers, one process each")
    print(f"{'workers':>7} {'tasks/s':>8} {'Redis CPU ms/task':>17} {'commands/task':>13} "
          f"{'connections/worker':>18} {'worker ms/task':>14} {'of which chunk work':>19}")
    for n in [int(x) for x in a.workers.split(",")]:
        procs = [subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "solo",
                                   "--queues", "predict", "--hostname", f"bench{i}@%h", "--without-mingle",
                                   "--without-gossip", "--loglevel", "WARNING"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(n)]
        try:
            os.environ["DIGITS_JOB_WINDOW"] = str(2 * n)
            st = settings.load()
            app = configure(url)
            base_clients = r.info("clients")["connected_clients"]
            deadline = time.time() + 60
            while len(app.control.ping(timeout=0.5) or []) < n and time.time() < deadline:
                pass
            clients = r.info("clients")["connected_clients"] - base_clients
            cmd0, cpu0, t0 = commands(r), cpu_seconds(redis_proc.pid), time.perf_counter()
            job = submit_prediction(csv, model, os.path.join(folder, f"out-{n}.csv"), app=app, settings=st,
                                    chunk_rows=10)
            m = job.wait(timeout=600, poll=0.05)
            wall = time.perf_counter() - t0
            cpu, cmds = cpu_seconds(redis_proc.pid) - cpu0, commands(r) - cmd0
            chunks = m["chunks"]
            work = m["timings"]["chunk_seconds"] / chunks
            per_task = wall * n / chunks  # worker-seconds per task
            print(f"{n:>7} {chunks / wall:>8.0f} {1000 * cpu / chunks:>17.3f} {cmds / chunks:>13.1f} "
                  f"{clients / n:>18.1f} {1000 * per_task:>14.1f} {1000 * work:>18.1f}", flush=True)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
    # memory per queued chunk message: 5,000 predict_chunk messages, no worker
    from tasks.queueing import queue_chunk
    from model.data import sources
    app = configure(url)
    source = sources.open_source(csv, 10)
    r.delete("predict")
    before = r.info("memory")["used_memory"]
    k = 5000
    with app.connection_for_write() as conn:
        for i in range(k):
            queue_chunk(app, "predict-membench", i % len(source.chunks), source, connection=conn)
    used = r.info("memory")["used_memory"] - before
    size = len(r.lindex("predict", 0) or b"")
    print(f"Redis memory per queued chunk message: {used / k:,.0f} bytes (message body {size} bytes)")
    r.delete("predict")
    redis_proc.kill()
    print(json.dumps({"redis": url}))


if __name__ == "__main__":
    main()

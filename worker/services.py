"""Command lines of the long-running services: Celery workers, the scheduler, Flower.

The embedded stack (worker.stack) starts them as subprocesses; `digits worker`,
`digits scheduler` and `digits flower` exec them in place (as the compose file does).
"""
import sys


def celery_argv(*args):
    """`python -m celery -A worker.app ...` with this interpreter."""
    return [sys.executable, "-m", "celery", "-A", "worker.app", *args]


def node_name(queues, host=None):
    """The default node name of a worker consuming `queues`: predict@HOST, train@HOST, or
    worker@HOST for several queues (each worker of a host gets its own name)."""
    import socket
    names = [q.strip() for q in str(queues).split(",") if q.strip()]
    return f"{names[0] if len(names) == 1 else 'worker'}@{host or socket.gethostname()}"


def worker_argv(queues, concurrency, name, max_tasks_per_child=None, loglevel="INFO"):
    """A Celery worker consuming `queues` ("predict", "train" or "predict,train")."""
    argv = celery_argv(
        "worker", "--queues", queues, "--concurrency", str(concurrency), "--hostname", name,
        "--prefetch-multiplier", "1", "--task-events", "--pool", "prefork",
        "--without-mingle", "--without-gossip", "--loglevel", loglevel)
    if max_tasks_per_child:
        argv += ["--max-tasks-per-child", str(max_tasks_per_child)]
    return argv


def scheduler_argv(schedule_file, loglevel="INFO"):
    """Celery beat with the retraining schedule from worker.settings."""
    return celery_argv("beat", "--schedule", str(schedule_file), "--loglevel", loglevel)


# Flower's tasks page: labelled arguments and the result (a job's progress text) beside the state
FLOWER_TASKS_COLUMNS = "name,uuid,state,args,kwargs,result,received,runtime,worker"
# its task runtime histogram (/metrics): chunks take milliseconds, training runs up to an hour
FLOWER_RUNTIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)


def flower_argv(address, port, db, loglevel="info"):
    """Flower with its state persisted in `db` (auth comes from flower_env), the tasks page's
    columns and the runtime buckets above."""
    return celery_argv(
        "flower", f"--address={address}", f"--port={port}", "--persistent=True", f"--db={db}",
        "--state_save_interval=10000", f"--logging={loglevel}", f"--tasks_columns={FLOWER_TASKS_COLUMNS}",
        "--task_runtime_metric_buckets=" + ",".join(f"{b:g}" for b in FLOWER_RUNTIME_BUCKETS))


def flower_env(user, password):
    """Environment that turns on Flower's basic auth (kept off the command line)."""
    return {"FLOWER_BASIC_AUTH": f"{user}:{password}"}


def refresh_flower(url, user, password, queues=None, timeout=10.0, every=0.5, log=None):
    """Have Flower inspect the workers again (GET /api/workers?refresh=1) until every queue in
    `queues` (default: the project's) is consumed by a worker it knows -> True; False after
    `timeout` seconds (None: no limit), said through log(line) when given.

    Flower inspects the workers once when it starts and again only when a worker's page is
    opened; its Broker page lists the queues of the workers that inspection found. Started
    beside the workers, its first inspection can run before they answer: the Broker page then
    misses a queue (or shows only the configured ones) until someone opens a worker's page."""
    import base64
    import json
    import time
    import urllib.request
    from tasks.queueing import QUEUES
    queues = QUEUES if queues is None else queues
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(url.rstrip("/") + "/api/workers?refresh=1",
                                     headers={"Authorization": f"Basic {token}"})
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                workers = json.load(r)
            seen = {q.get("name") for info in workers.values() for q in info.get("active_queues") or []}
            if set(queues) <= seen:
                return True
        except (OSError, ValueError):  # not listening yet, restarting, or a 503 while inspecting
            pass
        if deadline is not None and time.monotonic() > deadline:
            if log:
                log(f"Flower does not list every queue ({', '.join(queues)}) yet: its Broker page may miss "
                    "one until a worker's page is opened")
            return False
        time.sleep(every)

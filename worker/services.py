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


def flower_argv(address, port, db, loglevel="info"):
    """Flower with its state persisted in `db` (auth comes from flower_env)."""
    return celery_argv(
        "flower", f"--address={address}", f"--port={port}", "--persistent=True", f"--db={db}",
        "--state_save_interval=10000", f"--logging={loglevel}")


def flower_env(user, password):
    """Environment that turns on Flower's basic auth (kept off the command line)."""
    return {"FLOWER_BASIC_AUTH": f"{user}:{password}"}

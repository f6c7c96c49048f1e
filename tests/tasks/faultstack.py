"""A drill stack: a real embedded stack (Redis, predict and train workers) whose pool processes
can be made to fail for real on the chunks a drill names (tests/tasks/drillhook), with the
fault settings short enough for a test: 3 deaths make a poison chunk, a chunk is killed
and sent again after 20 s, 5 chunks failing in a row for one storage reason stop a job."""
import contextlib
import json
import os
import signal
from pathlib import Path

import psutil

from tests.conftest import LiveStack

HOOK = str(Path(__file__).parent / "drillhook")
DRILL_ENV = {"DIGITS_PREDICT_CONCURRENCY": "2", "DIGITS_TRAIN_CONCURRENCY": "1", "DIGITS_CHUNK_RETRIES": "2",
             "DIGITS_RETRY_BACKOFF": "0.1", "DIGITS_POISON_LIMIT": "3", "DIGITS_CHUNK_TIME_LIMIT": "20",
             "DIGITS_BREAKER_CHUNKS": "5", "DIGITS_JOB_WINDOW": "4",
             # a drill that freezes a whole worker holds it frozen as long as the drill says: the
             # stack's hung-worker check (30 s by default) replaced it mid-drill on a loaded machine
             # (tests/worker/test_full_redis.py drills that check with a patience of its own)
             "DIGITS_WORKER_PATIENCE": "600"}


@contextlib.contextmanager
def drill_stack(home, storage=None, **env):
    """Start a drill stack under `home` (storage: its DIGITS_STORAGE, default home/storage;
    env: more settings) -> LiveStack with .drill_file, stopped (frozen processes killed) at exit."""
    from worker import settings
    from worker.app import configure
    from worker.stack.embedded import Stack
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    drill_file = home / "drill.json"
    drill_file.write_text("{}")
    values = dict(DRILL_ENV, DIGITS_HOME=str(home), DIGITS_STORAGE=str(storage or home / "storage"),
                  DIGITS_DRILL_FILE=str(drill_file),
                  PYTHONPATH=os.pathsep.join(p for p in (HOOK, os.environ.get("PYTHONPATH")) if p), **env)
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    stack = None
    try:
        s = settings.load()
        stack = Stack(s, flower=False, record=False, log=lambda *a: None).start()
        live = LiveStack(stack, s, configure(stack.url), str(home))
        live.drill_file = drill_file
        yield live
    finally:
        if stack is not None:
            thaw(stack)
            stack.stop(grace=2)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def plan(live, actions):
    """Set the drill's actions: {task id: "kill" | "stop"}."""
    live.drill_file.write_text(json.dumps(actions))


def hits(live, task_id, action):
    """PIDs of the processes the drill hook hit with `action` on task_id."""
    prefix = f"{live.drill_file.name}.{task_id}.{action}."
    return [int(n[len(prefix):]) for n in os.listdir(live.drill_file.parent) if n.startswith(prefix)]


def thaw(stack):
    """SIGCONT every stopped process of the stack's workers (so that they can be stopped)."""
    for name in ("worker-predict", "worker-train"):
        with contextlib.suppress(Exception):
            for pid in stack.pids(name):
                with contextlib.suppress(psutil.Error, OSError):
                    if psutil.Process(pid).status() == psutil.STATUS_STOPPED:
                        os.kill(pid, signal.SIGCONT)

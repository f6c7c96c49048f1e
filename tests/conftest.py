"""Shared fixtures. Integration tests get a real embedded stack: a Redis server and real
Celery worker processes (plus Flower), started here under a temporary DIGITS_HOME."""
import os
import time
from dataclasses import dataclass

import numpy as np
import pytest

from model import checkpoint
from model.data.samples import load_sample
from model.train import Trainer, make_config


@dataclass
class LiveStack:
    stack: object  # worker.stack.embedded.Stack
    settings: object  # worker.settings.Settings
    app: object  # the configured Celery app
    home: str


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory):
    """Environment of the test stack (applied to os.environ for the session)."""
    from worker.stack.embedded import free_port
    home = tmp_path_factory.mktemp("home")
    env = {"DIGITS_HOME": str(home), "DIGITS_STORAGE": str(home / "storage"),
           "DIGITS_PREDICT_CONCURRENCY": "2", "DIGITS_TRAIN_CONCURRENCY": "1",
           "DIGITS_FLOWER_PORT": str(free_port(0)), "DIGITS_FLOWER_USER": "tester",
           "DIGITS_FLOWER_PASSWORD": "s3cret-test", "DIGITS_CHUNK_RETRIES": "2",
           "DIGITS_RETRY_BACKOFF": "0.1"}
    for k in ("DIGITS_BROKER_URL", "DIGITS_RESULT_BACKEND", "DIGITS_RETRAIN_CRON"):
        os.environ.pop(k, None)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def live(stack_env):
    """A running embedded stack with Flower; stopped at the end of the session."""
    from worker import settings
    from worker.app import configure
    from worker.stack.embedded import Stack
    s = settings.load()
    stack = Stack(s, flower=True, record=True, log=lambda *a: None).start()
    try:
        yield LiveStack(stack, s, configure(stack.url), str(s.home))
    finally:
        stack.stop()


@pytest.fixture(autouse=True)
def _live_app_is_current(request):
    """Before each test that uses the live stack, its app is made the current one again (the
    shared tasks follow the current app, and a test that started a stack of its own made
    that stack's app current)."""
    if "live" in request.fixturenames:
        app = request.getfixturevalue("live").app
        app.set_current()
        app.set_default()


@pytest.fixture(scope="session")
def sample():
    """The bundled real sample: train_x (2500, 784), train_y, test_x (500, 784), test_y."""
    return load_sample()


@pytest.fixture(scope="session")
def trained_model(sample, tmp_path_factory):
    """A small real model (3 epochs of the default recipe on the sample) and its file path."""
    t = Trainer(make_config("default", epochs=3), sample["train_x"], sample["train_y"])
    t.run()
    model = checkpoint.make_model(t.params, t.mean, t.std, recipe="default")
    path = tmp_path_factory.mktemp("model") / "model.npz"
    checkpoint.save_model(model, path)
    return model, str(path)


def write_test_csv(path, pixels):
    """A Kaggle test CSV (pixel0..pixel783) of raw pixels (N, 784)."""
    from model.data.samples import write_csv
    from model.data.block import PIXEL_COLUMNS
    write_csv(path, PIXEL_COLUMNS, np.asarray(pixels))
    return str(path)


def start_redis(sock, options=("--appendonly", "no")):
    """A redis-server of its own on unix socket sock (no port, no snapshots; options: more of
    its arguments) -> its Popen, once it answers."""
    import subprocess
    from worker import redisconn
    from worker.stack.embedded import redis_server_binary
    proc = subprocess.Popen([redis_server_binary(), "--port", "0", "--unixsocket", str(sock), "--save", "",
                             *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        if redisconn.ping(str(sock)):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def wait_for(pred, timeout, what, poll=0.05):
    """Poll pred() until it returns a true value -> that value; AssertionError after timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")

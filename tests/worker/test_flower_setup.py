"""Flower as this project starts it (worker.services): the tasks page's columns, the runtime
histogram's buckets, and a Broker page that lists every queue without a worker's page opened
first, for the embedded stack and for `digits flower` in a cluster whose workers start late."""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import requests

from tests.conftest import start_redis, wait_for
from worker import services

pytestmark = pytest.mark.integration
AUTH = ("tester", "s3cret-test")
DIGITS = shutil.which("digits")


def get(base, path, auth=AUTH, **params):
    return requests.get(base + path, auth=auth, params=params, timeout=10)


def broker_queues(base, auth=AUTH):
    """The queue names of Flower's Broker page (the rows of its queue table)."""
    r = get(base, "/broker", auth)
    assert r.status_code == 200, r.status_code
    return set(re.findall(r'<tr id="([^"]+)">\s*<td>', r.text))


def test_the_tasks_page_shows_args_kwargs_and_result_columns(live):
    r = get(live.stack.flower_url, "/tasks")
    assert r.status_code == 200
    columns = re.findall(r'<th data-column="([a-z_]+)">', r.text)
    assert columns == services.FLOWER_TASKS_COLUMNS.split(",")
    assert {"args", "kwargs", "result"} <= set(columns)


def test_the_broker_page_lists_every_queue_once_the_stack_is_up(live):
    from tasks.queueing import QUEUES
    assert broker_queues(live.stack.flower_url) == set(QUEUES)
    assert get(live.stack.flower_url, "/broker", auth=None).status_code == 401  # behind the basic auth


def test_task_runtimes_are_bucketed_up_to_an_hour(live, trained_model, sample, tmp_path):
    from tests.conftest import write_test_csv
    from worker.client import submit_prediction
    csv = write_test_csv(tmp_path / "t.csv", sample["test_x"][:50])
    job = submit_prediction(csv, trained_model[1], str(tmp_path / "out.csv"), app=live.app,
                            settings=live.settings, chunk_rows=25)
    assert job.wait(timeout=60)["state"] == "SUCCESS"

    def buckets():
        text = requests.get(live.stack.flower_url + "/metrics", timeout=10).text  # /metrics needs no auth
        lines = [ln for ln in text.splitlines()
                 if ln.startswith("flower_task_runtime_seconds_bucket{") and 'task="digits.predict_chunk"' in ln]
        return {float(le) for ln in lines for le in re.findall(r'le="([^"]+)"', ln) if le != "+Inf"} or None

    found = wait_for(buckets, 30, "a chunk's runtime in Flower's histogram", poll=0.2)
    assert found == {float(b) for b in services.FLOWER_RUNTIME_BUCKETS}
    assert max(found) == 3600.0


def _spawn(argv, env, log):
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_digits_flower_in_a_cluster_lists_a_queue_whose_worker_started_after_it(tmp_path):
    """`digits flower` started when only the train worker answers: its first inspection finds
    the train queue alone. The predict worker starts later; with no worker page opened, the
    Broker page comes to list the predict queue too."""
    from worker.stack.embedded import free_port
    sock = tmp_path / "r.sock"
    redis = start_redis(sock)
    url = f"redis+socket://{sock}"
    port = free_port(0)
    env = dict(os.environ, DIGITS_BROKER_URL=url, DIGITS_RESULT_BACKEND=url, DIGITS_HOME=str(tmp_path / "home"),
               DIGITS_STORAGE=str(tmp_path / "storage"), DIGITS_FLOWER_PORT=str(port),
               DIGITS_FLOWER_USER="ops", DIGITS_FLOWER_PASSWORD="cluster-pw")
    auth = ("ops", "cluster-pw")
    base = f"http://127.0.0.1:{port}"
    procs = []
    with open(tmp_path / "services.log", "ab") as log:
        try:
            procs.append(_spawn(services.worker_argv("train", 1, "train@drill"), env, log))
            app_ping = services.celery_argv("inspect", "ping", "-d", "train@drill", "--timeout", "1")
            wait_for(lambda: subprocess.run(app_ping, env=env, capture_output=True).returncode == 0, 60,
                     "the train worker")
            procs.append(_spawn([DIGITS, "flower"], env, log))

            def first_look():
                try:
                    workers = get(base, "/api/workers", auth).json()  # Flower's cache: no inspection asked
                except (requests.RequestException, ValueError):
                    return None
                return "active_queues" in workers.get("train@drill", {})

            wait_for(first_look, 60, "Flower's first look at the train worker", poll=0.2)
            assert broker_queues(base, auth) == {"train"}  # what a user saw: no predict queue
            t0 = time.monotonic()
            procs.append(_spawn(services.worker_argv("predict", 1, "predict@drill"), env, log))
            wait_for(lambda: broker_queues(base, auth) == {"predict", "train"}, 90,
                     "the predict queue on Flower's Broker page")
            assert time.monotonic() - t0 < 90
            assert "predict@drill" in get(base, "/api/workers", auth).json()
        finally:
            for proc in reversed(procs):
                _stop(proc)
            redis.kill()
            redis.wait()
    assert all(p.returncode is not None for p in procs)

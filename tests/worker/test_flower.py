"""Flower on the live stack: what a person watching the queue sees, through Flower's
authenticated HTTP API (basic auth tester/s3cret-test, set by conftest's stack_env)."""
import ast
import re

import pytest
import requests

from model.data.samples import write_sample
from model.train import make_config
from tasks import jobfiles, records
from tests.conftest import wait_for

pytestmark = pytest.mark.integration
AUTH = ("tester", "s3cret-test")


def get(live, path, auth=AUTH, **params):
    return requests.get(live.stack.flower_url + path, auth=auth, params=params, timeout=10)


@pytest.fixture(scope="module")
def jobs_seen(live, sample, trained_model, tmp_path_factory):
    """A prediction job (3 chunks) and a training job run through the live stack; the
    training job's Flower records polled while it ran."""
    from tests.conftest import write_test_csv
    from worker.client import submit_prediction, submit_training
    folder = tmp_path_factory.mktemp("flower-data")
    test_csv = write_test_csv(folder / "test.csv", sample["test_x"])
    pred = submit_prediction(test_csv, trained_model[1], str(folder / "out.csv"), app=live.app,
                             settings=live.settings, chunk_rows=200)
    pred_manifest = pred.wait(timeout=60)
    assert pred_manifest["state"] == "SUCCESS"

    paths = write_sample(str(folder / "sample"), images=False)
    with open(paths["train"]) as f:
        header, body = f.readline(), f.readlines()
    big = folder / "big.csv"
    big.write_text(header + "".join(body * 8))  # 20,000 rows: a run of a few seconds
    train = submit_training(str(big), "flowerwatch", make_config("faithful", epochs=4, batch_size=8),
                            app=live.app, settings=live.settings)
    running = []

    def progress_in_flower():
        r = get(live, f"/api/task/info/{train.id}")
        if r.status_code == 200:
            info = r.json()
            if info.get("state") == "STARTED" and re.search(r"epoch [2-9]/4 batch \d+/\d+", info.get("result") or ""):
                running.append(info)
                return True
        assert train.result() is None, "training ended before Flower showed its progress"
        return False

    wait_for(progress_in_flower, 60, "the train task's progress in Flower", poll=0.2)
    train_manifest = train.wait(timeout=90)
    assert train_manifest["state"] == "SUCCESS"
    return {"pred": pred, "train": train, "running": running[-1], "train_manifest": train_manifest}


def test_unauthenticated_requests_are_refused(live):
    for path in ("/api/tasks", "/api/workers", "/api/task/info/nope", "/api/task/types", "/tasks", "/"):
        r = get(live, path, auth=None)
        assert r.status_code == 401, (path, r.status_code)
    assert get(live, "/api/tasks", auth=("tester", "wrong")).status_code == 401
    assert get(live, "/api/tasks", auth=("someone", "s3cret-test")).status_code == 401
    assert get(live, "/api/tasks").status_code == 200


def test_healthcheck_needs_no_auth(live):
    r = get(live, "/healthcheck", auth=None)
    assert r.status_code == 200 and r.text == "OK"


def test_workers_are_listed(live):
    want = set(live.stack.worker_names())
    for params in ({"refresh": 1}, {}):
        r = get(live, "/api/workers", **params)
        assert r.status_code == 200
        assert want <= set(r.json()), (params, sorted(r.json()))
    workers = get(live, "/api/workers", refresh=1).json()
    queues = {name: {q["name"] for q in info.get("active_queues", [])} for name, info in workers.items()}
    predict_name, train_name = live.stack.worker_names()
    assert queues[predict_name] == {"predict"} and queues[train_name] == {"train"}
    for name, info in workers.items():  # each queue bound to its own exchange and routing key
        for q in info.get("active_queues", []):
            assert (q["exchange"]["name"], q["routing_key"]) == (q["name"], q["name"]), q
    assert "digits.train_job" in workers[train_name]["registered"]


def test_prediction_tasks_are_listed_with_job_args(live, jobs_seen):
    job_id = jobs_seen["pred"].id
    plan = jobfiles.read_json(jobfiles.ref(live.settings.storage, job_id, "plan.json"))
    chunks = [tuple(c) for c in plan["chunks"]]
    assert len(chunks) == 3

    def listed():
        tasks = get(live, "/api/tasks").json()
        mine = {tid: t for tid, t in tasks.items() if tid.startswith(job_id)}
        done = [t for t in mine.values() if t["state"] == "SUCCESS"]
        return mine if len(done) == len(chunks) + 2 else None  # the chunks, assemble, the job's row

    mine = wait_for(listed, 30, "the prediction job's tasks in Flower", poll=0.2)
    predict_name, _ = live.stack.worker_names()
    for i, (lo, hi) in enumerate(chunks):
        t = mine[f"{job_id}-chunk-{i}"]
        assert t["name"] == "digits.predict_chunk" and t["worker"] == predict_name
        assert t["args"] == f"job={job_id}, chunk={i}/3, bytes {lo}-{hi}"  # labelled: job, chunk, its bytes
        assert re.fullmatch(rf"'chunk {i}/3: \d+ rows, \d+\.\d\ds'", t["result"]), t["result"]  # no "0 bad"
    body = mine[f"{job_id}:assemble"]
    assert body["name"] == "digits.assemble" and body["state"] == "SUCCESS"
    assert body["args"] == f"job={job_id}"  # the job id only, not every chunk's summary
    assert body["result"].startswith("'500 rows in: 500 ok; output ") and "bad" not in body["result"]
    row = mine[job_id]  # the job's own row
    assert row["name"] == "digits.predict_job" and row["state"] == "SUCCESS"
    assert ast.literal_eval(row["kwargs"])["chunks"] == 3
    assembles = get(live, "/api/tasks", taskname="digits.assemble").json()
    assert [t for t in assembles.values() if job_id in t["args"]] == [assembles[f"{job_id}:assemble"]]  # one per job
    # filtering by task name works too
    listed_chunks = get(live, "/api/tasks", taskname="digits.predict_chunk").json()
    assert {f"{job_id}-chunk-{i}" for i in range(len(chunks))} <= set(listed_chunks)


def test_training_task_shows_its_job_and_progress(live, jobs_seen):
    job_id = jobs_seen["train"].id
    running = jobs_seen["running"]
    _, train_name = live.stack.worker_names()
    assert running["name"] == "digits.train_job" and running["worker"] == train_name
    assert running["args"] == f"job={job_id}, model=flowerwatch, recipe=faithful, epochs=4"
    assert re.search(r"epoch \d/4 batch \d+/\d+ loss \d+\.\d+ val_accuracy \d\.\d+", running["result"])

    def finished():
        info = get(live, f"/api/task/info/{job_id}").json()
        return info if info["state"] == "SUCCESS" else None

    info = wait_for(finished, 30, "the train task's SUCCESS in Flower", poll=0.2)
    manifest = jobs_seen["train_manifest"]
    result = ast.literal_eval(info["result"])  # one line a person reads, key facts first, not the manifest
    assert result == records.TrainJob.summary(manifest) and len(info["result"]) < 600
    assert result.startswith(f"flowerwatch:{manifest['version']} val_accuracy {manifest['val_accuracy']:.4f}, "
                             "promoted to production (first version")
    assert result.endswith("report.html") and "epoch 1" not in result and "skipped" not in result
    assert job_id in get(live, "/api/tasks", taskname="digits.train_job").json()


def test_prometheus_metrics_need_no_auth(live, jobs_seen):
    """Flower 2.2 serves /metrics without authentication, even with basic auth on."""
    r = get(live, "/metrics", auth=None)
    assert r.status_code == 200
    assert "flower_events_total" in r.text and "flower_worker_online" in r.text
    _, train_name = live.stack.worker_names()
    assert re.search(r'flower_events_total\{[^}]*task="digits\.train_job"[^}]*type="task-succeeded"', r.text) \
        or re.search(r'flower_events_total\{[^}]*type="task-succeeded"[^}]*task="digits\.train_job"', r.text) \
        or re.search(r'flower_events_total\{task="digits\.train_job",type="task-succeeded"', r.text), \
        [line for line in r.text.splitlines() if "train_job" in line][:5]
    assert f'flower_worker_online{{worker="{train_name}"}} 1.0' in r.text
    # task-sent events carry one sender name per host, not a new label series per process
    senders = set(re.findall(r'flower_events_total\{[^}]*type="task-sent"[^}]*\}', r.text))
    assert senders and not any(re.search(r'worker="gen\d+@', line) for line in senders), senders
    assert any('worker="digits-sender@' in line for line in senders), senders

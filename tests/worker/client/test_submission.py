"""worker.client checks that run before anything is queued (no stack needed)."""
import pytest

from model.errors import DataError, JobError, RegistryError
from tests.conftest import write_test_csv
from worker import settings
from worker.client.submission import check_prediction


@pytest.fixture()
def s(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DIGITS_STORAGE", raising=False)
    monkeypatch.delenv("DIGITS_BROKER_URL", raising=False)
    return settings.load()


def test_a_good_prediction_passes(s, tmp_path, sample, trained_model):
    csv = write_test_csv(tmp_path / "test.csv", sample["test_x"][:5])
    check_prediction(s, csv, trained_model[1], str(tmp_path / "out.csv"))


@pytest.mark.parametrize("case", ["missing input", "unknown model", "out is a folder", "no out folder"])
def test_bad_predictions_fail_before_queueing(s, tmp_path, sample, trained_model, case):
    csv = write_test_csv(tmp_path / "test.csv", sample["test_x"][:5])
    args = {"input_ref": csv, "model_ref": trained_model[1], "out": str(tmp_path / "out.csv")}
    expected, words = {
        "missing input": (DataError, "no such file"),
        "unknown model": (RegistryError, "neither a registered model"),
        "out is a folder": (JobError, "is a folder"),
        "no out folder": (JobError, "does not exist"),
    }[case]
    if case == "missing input":
        args["input_ref"] = str(tmp_path / "nope.csv")
    elif case == "unknown model":
        args["model_ref"] = "nope"
    elif case == "out is a folder":
        args["out"] = str(tmp_path)
    else:
        args["out"] = str(tmp_path / "missing" / "out.csv")
    with pytest.raises(expected) as e:
        check_prediction(s, **args)
    assert words in str(e.value)


def test_training_data_is_checked_before_queueing(s, tmp_path, sample):
    from worker.client.submission import check_training
    csv = write_test_csv(tmp_path / "test.csv", sample["test_x"][:5])  # no label column
    with pytest.raises(DataError, match="has no label column"):
        check_training(csv)
    with pytest.raises(DataError, match="no such file"):
        check_training(str(tmp_path / "nope.csv"))


def test_each_kind_has_its_handle_class(s, tmp_path):
    from tasks import jobfiles, records
    from worker.client import open_job, status
    from worker.client.handles import PredictionJob, TrainingJob
    records.PredictJob(job_id="predict-k", chunks=2, output="/o.csv", download_to="/o.csv", submitted_at=1.0).write(s.storage)
    records.TrainJob.new("train-k", "digits", "/d.csv", {"recipe": "faithful"}).write(s.storage)
    assert type(open_job(None, s, "predict-k")) is PredictionJob
    assert type(open_job(None, s, "train-k")) is TrainingJob
    # no broker (app None): the state from storage alone
    assert status(None, s, "predict-k")["progress"] == {"chunks_done": 0, "chunks": 2, "fraction": 0.0}
    jobfiles.request_cancel(s.storage, "train-k")
    assert status(None, s, "train-k")["state"] == "CANCELLING"


@pytest.mark.integration
@pytest.mark.parametrize("kind, when", [("predict", "before"), ("predict", "at the send"), ("train", "before"),
                                        ("train", "at the send")])
def test_a_submission_rides_out_a_redis_that_is_down(kind, when, s, tmp_path, monkeypatch, sample, trained_model):
    """Redis SIGKILLed before a submission, or as its first task message is sent, and started
    again on its append-only file 1.5 s later: the submission (a prediction or training,
    through the Celery app) says the outage once, waits, and queues its job's messages once
    Redis is back."""
    import json
    import threading

    import redis

    from model.data.samples import write_sample
    from model.train import make_config
    from tasks import jobfiles, keys, queueing
    from tests.conftest import start_redis
    from worker.app import make_app
    from worker.client import submit_prediction, submit_training
    sock, data = tmp_path / "r.sock", tmp_path / "redis-data"
    data.mkdir()
    aof = ["--appendonly", "yes", "--dir", str(data)]
    proc = start_redis(sock, aof)
    url = f"redis+socket://{sock}"
    monkeypatch.setenv("DIGITS_BROKER_URL", url)
    monkeypatch.setenv("DIGITS_RESULT_BACKEND", url)
    s = settings.load()
    app = make_app(s, url)
    app.backend.client.set("before", "the outage")  # a connection that worked, then went away
    back, timers = [], []

    def outage():  # Redis dies, for real, and is back 1.5 s later
        proc.kill()
        proc.wait()
        timers.append(threading.Timer(1.5, lambda: back.append(start_redis(sock, aof))))
        timers[-1].start()

    if when == "before":
        outage()
    else:  # the Celery app's send of the first task message (a chunk, or the training job)
        real_send = app.send_task

        def send_task(*a, **options):
            if not timers:
                outage()
            return real_send(*a, **options)

        monkeypatch.setattr(app, "send_task", send_task)
    said = []
    try:
        if kind == "predict":
            csv = write_test_csv(tmp_path / "test.csv", sample["test_x"][:50])
            job = submit_prediction(csv, trained_model[1], str(tmp_path / "out.csv"), app=app, settings=s,
                                    chunk_rows=10, on_outage=said.append)
            window = min(5, s.job_window)  # 5 chunks of 10 rows: the first `window` are queued
            name, ids = queueing.PREDICT_CHUNK, [keys.chunk_task_id(job.id, i) for i in range(window)]
        else:
            train = write_sample(str(tmp_path / "sample"), images=False)["train"]
            job = submit_training(train, "digits", make_config("faithful", epochs=1), app=app, settings=s,
                                  on_outage=said.append)
            name, ids = queueing.TRAIN_JOB, [job.id]
        assert len(said) == 1 and "unreachable" in said[0] and "reconnecting" in said[0], said
        r = redis.Redis(unix_socket_path=str(sock))
        queued = [json.loads(m)["headers"]["id"] for m in r.lrange(queueing.queue_of(name), 0, -1)]
        assert sorted(set(queued)) == sorted(ids), queued  # each of the job's first messages, nothing else
        assert r.get("before") == b"the outage"  # the same Redis data, back from its append-only file
        assert jobfiles.read_json(jobfiles.ref(s.storage, job.id, "job.json"))["job_id"] == job.id
    finally:
        for timer in timers:
            timer.join()
        for p in back:
            p.kill()
            p.wait()

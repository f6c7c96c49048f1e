"""worker.client checks that run before anything is queued (no stack needed)."""
import pytest

from model.errors import DataError, JobError, RegistryError
from worker import settings
from worker.client import check_prediction
from tests.conftest import write_test_csv


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
    from worker.client import check_training
    csv = write_test_csv(tmp_path / "test.csv", sample["test_x"][:5])  # no label column
    with pytest.raises(DataError, match="has no label column"):
        check_training(csv)
    with pytest.raises(DataError, match="no such file"):
        check_training(str(tmp_path / "nope.csv"))


def test_each_kind_has_its_handle_class(s, tmp_path):
    from tasks import jobs
    from worker.client import PredictionJob, TrainingJob, open_job, status
    jobs.PredictJob(job_id="predict-k", chunks=2, output="/o.csv", download_to="/o.csv", submitted_at=1.0).write(s.storage)
    jobs.TrainJob.new("train-k", "digits", "/d.csv", {"recipe": "faithful"}).write(s.storage)
    assert type(open_job(None, s, "predict-k")) is PredictionJob
    assert type(open_job(None, s, "train-k")) is TrainingJob
    # no broker (app None): the state from storage alone
    assert status(None, s, "predict-k")["progress"] == {"chunks_done": 0, "chunks": 2, "fraction": 0.0}
    jobs.request_cancel(s.storage, "train-k")
    assert status(None, s, "train-k")["state"] == "CANCELLING"

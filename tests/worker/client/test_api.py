"""worker.client.Client, the one-import Python API, against a real stack: the running test
stack (as a `digits up`), the same broker configured by URL, and a temporary embedded stack."""
import numpy as np
import pandas as pd
import pytest

from model import checkpoint
from model.errors import DataError, JobError
from tests.conftest import write_test_csv
from worker.client import Client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(live, sample):
    """A model `api` trained through the queue by the Client -> (its training manifest)."""
    with Client() as c:
        assert c.broker_url == live.stack.url  # the running stack is reused, none started
        return c.train(_labeled_csv(live, sample), name="api", recipe="faithful", epochs=2)


def _labeled_csv(live, sample):
    from model.data.block import PIXEL_COLUMNS
    from model.data.samples import write_csv
    path = f"{live.home}/api-train.csv"
    xy = np.column_stack([sample["train_y"][:600], sample["train_x"][:600]])  # (600, 785)
    write_csv(path, ["label", *PIXEL_COLUMNS], xy)
    return path


def test_train_registers_a_version(trained):
    assert trained["state"] == "SUCCESS"
    assert trained["name"] == "api" and trained["version"]
    assert 0.5 < trained["val_accuracy"] <= 1.0


def test_predict_a_file_writes_the_submission(live, trained, sample, tmp_path):
    csv = write_test_csv(tmp_path / "test.csv", sample["test_x"][:40])
    with Client() as c:
        manifest = c.predict(csv, model="api", out=tmp_path / "sub.csv")
        assert manifest["state"] == "SUCCESS" and manifest["rows_ok"] == 40
        sub = pd.read_csv(tmp_path / "sub.csv")
        model = checkpoint.load_model(trained["model"])
        labels, _ = model.predict(sample["test_x"][:40])
        assert sub["ImageId"].tolist() == list(range(1, 41))
        assert sub["Label"].tolist() == labels.tolist()
        st = c.status(manifest["job_id"])
        assert st["state"] == "SUCCESS" and st["rows_ok"] == 40
        listed = [j["job_id"] for j in c.jobs(kind="predict", since="1h")]
        assert manifest["job_id"] in listed
        assert c.cancel(manifest["job_id"]) is False  # already ended
        with pytest.raises(JobError):
            c.cancel("predict-nosuchjob")


@pytest.mark.parametrize("kind", ["array", "frame", "images"])
def test_predict_an_array_or_frame_returns_a_frame(live, trained, sample, kind):
    x = sample["test_x"][:25].astype(np.int64)  # (25, 784)
    x[3, 10] = 300  # a bad row: a pixel outside 0..255
    if kind == "frame":
        data = pd.DataFrame(x, columns=[f"pixel{i}" for i in range(784)]).assign(label=0)
    elif kind == "images":
        data = x.reshape(25, 28, 28)
    else:
        data = x
    with Client() as c:
        frame = c.predict(data, model="api")
    model = checkpoint.load_model(trained["model"])
    proba = model.predict_proba(np.delete(x, 3, axis=0).astype(np.uint8))  # (24, 10)
    assert list(frame.columns) == ["ImageId", "Label", "confidence"]
    assert frame["ImageId"].tolist() == list(range(1, 26))
    good = frame.drop(index=3)
    assert good["Label"].astype(int).tolist() == proba.argmax(axis=1).tolist()
    np.testing.assert_allclose(good["confidence"].to_numpy(), proba.max(axis=1), rtol=1e-4, atol=1e-5)
    assert pd.isna(frame.loc[3, "Label"]) and np.isnan(frame.loc[3, "confidence"])
    assert list(frame.attrs["errors"]) == [4] and "300" in frame.attrs["errors"][4]
    assert frame.attrs["manifest"]["rows_bad"] == 1


def test_a_wrong_shape_is_refused_before_anything_is_queued(live):
    with Client() as c:
        with pytest.raises(DataError, match=r"shape \(3, 10\)"):
            c.predict(np.zeros((3, 10)), model="api")


def test_a_configured_broker_url_is_used(live, trained, sample, monkeypatch, tmp_path):
    monkeypatch.setenv("DIGITS_BROKER_URL", live.stack.url)
    with Client() as c:
        assert c.settings.broker_url == c.broker_url == live.stack.url
        job = c.predict(write_test_csv(tmp_path / "t.csv", sample["test_x"][:5]), model="api",
                        out=tmp_path / "o.csv", wait=False)
        assert job.wait(timeout=60)["rows_ok"] == 5


def test_a_closed_client_refuses_jobs(live, tmp_path):
    c = Client()
    with pytest.raises(JobError, match="closed"):
        c.predict("x.csv", model="api", out=tmp_path / "o.csv")


def test_a_temporary_stack_lives_for_the_block(trained, sample, tmp_path, monkeypatch):
    from worker import settings
    from worker.stack.broker import broker_reachable
    home = tmp_path / "home"
    monkeypatch.setenv("DIGITS_HOME", str(home))
    monkeypatch.setenv("DIGITS_STORAGE", str(home / "storage"))
    model = tmp_path / "model.npz"
    model.write_bytes(open(trained["model"], "rb").read())
    with Client() as c:
        url = c.broker_url
        assert url == settings.load().embedded_url  # a stack of its own under the new home
        frame = c.predict(sample["test_x"][:8], model=str(model))
        assert frame["Label"].notna().all() and len(frame) == 8
    assert not broker_reachable(url)  # stopped with the block

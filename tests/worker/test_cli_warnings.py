"""The `digits` commands leave no socket to the garbage collector: run as
`python -X dev -W error::ResourceWarning -m worker.cli ...` against the running test stack,
none prints a ResourceWarning (a submission, a waiting prediction, and status and watch of
a running job, the commands that open Redis connections of their own)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from model.data.block import TRAIN_COLUMNS
from model.data.samples import write_csv
from tests.conftest import write_test_csv

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def digits(live, stack_env):
    env = dict(os.environ, **stack_env)

    def run(*args, codes=(0,)):
        r = subprocess.run([sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-m", "worker.cli",
                            *map(str, args)], env=env, capture_output=True, text=True, timeout=180)
        assert "ResourceWarning" not in r.stderr, r.stderr[-2000:]
        assert r.returncode in codes, r.stderr[-2000:]
        return r.stdout
    return run


def test_predict_and_follow_a_job_without_resource_warnings(digits, sample, trained_model, tmp_path):
    csv = write_test_csv(tmp_path / "test.csv", sample["test_x"][:200])
    digits("predict", csv, "--model", trained_model[1], "--out", tmp_path / "out.csv")
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 201
    job = digits("predict", csv, "--model", trained_model[1], "--out", tmp_path / "out2.csv", "--no-wait").split()[-1]
    digits("watch", job)
    train = tmp_path / "train.csv"
    write_csv(train, TRAIN_COLUMNS, np.column_stack([sample["train_y"], sample["train_x"]]))  # (2500, 785)
    run = digits("train", train, "--name", "warnings", "--epochs", "30", "--no-wait").split()[-1]
    out = digits("status", run)  # a running job: its state comes from the broker
    assert f"job {run}" in out
    digits("cancel", run)
    digits("watch", run, codes=(1,))  # a cancelled job exits 1

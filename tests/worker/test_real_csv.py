"""Files as tools write them, through the real `digits` command: with --local and through
the queue of the running test stack, each gives the plain file's predictions byte for byte,
or (normalized values, a wrong training header, an ambiguous zip) a one-line refusal before
any stack starts; no prediction exits 0 with nothing predicted."""
import json
import os
import subprocess

import numpy as np
import pytest

from tests.model.data import tool_files
from tests.worker.test_cli import DIGITS, WAIT, assert_clean_failure, read_submission

pytestmark = pytest.mark.integration
N = 200


@pytest.fixture(scope="module")
def cli(live, stack_env):
    assert DIGITS, "the `digits` console script is not installed (pip install -e .)"
    env = dict(os.environ, **stack_env)

    def run(*args, env_extra=None):
        return subprocess.run([DIGITS, *map(str, args)], env=dict(env, **(env_extra or {})), capture_output=True,
                              text=True, timeout=WAIT)
    run.env = env
    return run


@pytest.fixture(scope="module")
def inputs(sample, tmp_path_factory):
    """name -> path of the same N test images as each tool writes them, plus "plain"."""
    d = tmp_path_factory.mktemp("tool-files")
    x = sample["test_x"][:N]
    out = {}
    for name, write in tool_files.WRITERS.items():
        out[name] = d / (name.replace(" ", "_").replace(":", "").replace(".", "") + ".csv")
        out[name].write_bytes(write(x))
    plain = tool_files.plain(x)
    for name, (suffix, compress) in tool_files.COMPRESSORS.items():
        out[name] = d / (name.replace(" ", "_").replace(".", "") + suffix)
        out[name].write_bytes(compress(plain))
    out["kaggle zip"] = d / "digit-recognizer.zip"
    out["kaggle zip"].write_bytes(tool_files.kaggle_zip(sample["train_x"][:300], sample["train_y"][:300], x))
    return out


@pytest.fixture(scope="module")
def expected(trained_model, sample):
    """The submission the plain file gets: ImageId 1..N and the model's labels."""
    return np.arange(1, N + 1), trained_model[0].predict(sample["test_x"][:N])[0]


CASES = sorted(tool_files.WRITERS) + sorted(tool_files.COMPRESSORS) + ["kaggle zip"]


@pytest.mark.parametrize("mode", ["local", "queue"])
@pytest.mark.parametrize("case", CASES)
def test_each_tool_file_predicts_as_the_plain_file(cli, inputs, trained_model, expected, tmp_path, case, mode):
    out = tmp_path / "sub.csv"
    r = cli("predict", inputs[case], "--model", trained_model[1], "--out", out, *(["--local"] if mode == "local" else []))
    assert r.returncode == 0, r.stderr
    assert f"wrote {N} predictions to" in r.stdout
    ids, labels = read_submission(out)
    np.testing.assert_array_equal(ids, expected[0])
    np.testing.assert_array_equal(labels, expected[1])
    assert not os.path.exists(tmp_path / "sub.errors.csv")


def test_what_was_ignored_is_said_in_the_output_and_the_manifest(cli, inputs, trained_model, tmp_path):
    out = tmp_path / "sub.csv"
    r = cli("predict", inputs["R write.csv"], "--model", trained_model[1], "--out", out)
    assert r.returncode == 0, r.stderr
    assert "read as: index column '' ignored" in r.stdout
    r = cli("predict", inputs["kaggle zip"], "--model", trained_model[1], "--out", out, "--json")
    m = json.loads(r.stdout)
    assert m["state"] == "SUCCESS" and m["read_as"] == [f"unpacked from {inputs['kaggle zip']}::test.csv"]
    st = json.loads(cli("status", m["job_id"], "--json").stdout)
    assert st["read_as"] == m["read_as"]


def refused_before_anything_starts(cli, tmp_path, *args):
    """`digits ARGS` on a fresh home: one error line, exit 1, no stack started, nothing queued."""
    home = tmp_path / "fresh-home"
    r = cli(*args, env_extra={"DIGITS_HOME": str(home), "DIGITS_STORAGE": str(tmp_path / "st")})
    line = assert_clean_failure(r)
    assert r.returncode == 1
    assert not (home / "logs").exists() and not (tmp_path / "st" / "jobs").exists()
    return line


@pytest.mark.parametrize("mode", ["local", "queue"])
def test_normalized_values_are_refused_with_one_line(cli, sample, trained_model, tmp_path, mode):
    import pandas as pd
    ref = tmp_path / "normalized.csv"
    pd.DataFrame(sample["test_x"][:N] / 255.0, columns=tool_files.PIXELS).to_csv(ref, index=False)
    line = refused_before_anything_starts(cli, tmp_path, "predict", ref, "--model", trained_model[1], "--out",
                                          tmp_path / "o.csv", *(["--local"] if mode == "local" else []))
    assert str(ref) in line and "look normalized" in line and "raw pixels 0..255" in line
    assert not (tmp_path / "o.csv").exists()


def test_normalized_values_in_a_zip_are_refused_at_submit(cli, sample, trained_model, tmp_path):
    import pandas as pd
    ref = tmp_path / "normalized.zip"
    raw = pd.DataFrame(sample["test_x"][:N] / 255.0, columns=tool_files.PIXELS).to_csv(index=False).encode()
    ref.write_bytes(tool_files.zipped({"test.csv": raw}))
    line = refused_before_anything_starts(cli, tmp_path, "predict", ref, "--model", trained_model[1], "--out",
                                          tmp_path / "o.csv")
    assert f"{ref}::test.csv" in line and "look normalized" in line


def test_an_ambiguous_zip_is_refused_at_submit_listing_its_members(cli, sample, trained_model, tmp_path):
    ref = tmp_path / "two.zip"
    plain = tool_files.plain(sample["test_x"][:5])
    ref.write_bytes(tool_files.zipped({"a.csv": plain, "b.csv": plain}))
    line = refused_before_anything_starts(cli, tmp_path, "predict", ref, "--model", trained_model[1], "--out",
                                          tmp_path / "o.csv")
    assert "holds 2 CSV files (a.csv, b.csv)" in line and f"{ref}::a.csv" in line


@pytest.mark.parametrize("header", ["pixel0,pixel1", "lable," + ",".join(tool_files.PIXELS)])
def test_a_training_file_with_a_wrong_header_is_told_the_training_layout(cli, tmp_path, header):
    ref = tmp_path / "train.csv"
    ref.write_text(header + "\n" + "0," * 784 + "0\n")
    line = refused_before_anything_starts(cli, tmp_path, "train", ref, "--epochs", "1")
    assert "a training file starts 'label,pixel0,...,pixel783'" in line


def test_a_compressed_training_file_trains_through_the_queue(cli, sample, tmp_path):
    import gzip
    ref = tmp_path / "train.csv.gz"
    ref.write_bytes(gzip.compress(tool_files.train_csv(sample["train_x"][:600], sample["train_y"][:600])))
    r = cli("train", ref, "--epochs", "1", "--name", f"gz{os.getpid()}", "--out", tmp_path / "m.npz")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.npz").exists()


def test_the_kaggle_zip_trains_on_its_train_csv_locally(cli, inputs, tmp_path):
    r = cli("train", inputs["kaggle zip"], "--local", "--epochs", "1", "--out", tmp_path / "m.npz")
    assert r.returncode == 0, r.stderr
    assert "trained 300 images" in r.stdout


# ----------------------------------------------------------------------------- nothing predicted

def all_bad(tmp_path, sample):
    """A file whose every record is bad (a word in each row)."""
    lines = [",".join(tool_files.PIXELS)] + [",".join(["x"] + [str(v) for v in r[1:]])
                                            for r in sample["test_x"][:N].tolist()]
    ref = tmp_path / "bad.csv"
    ref.write_text("\n".join(lines) + "\n")
    return ref


@pytest.mark.parametrize("mode", ["local", "queue"])
@pytest.mark.parametrize("kind", ["all bad", "header only", "folder of no images"])
def test_a_prediction_with_nothing_predicted_exits_1_with_one_line(cli, sample, trained_model, tmp_path, kind, mode):
    if kind == "all bad":
        ref, why = all_bad(tmp_path, sample), f"no predictions: all {N} records are bad; {N} of them: " \
                                                "non-numeric value 'x' in pixel0"
    elif kind == "header only":
        ref, why = tmp_path / "h.csv", "no predictions: the input holds no records"
        ref.write_text(",".join(tool_files.PIXELS) + "\n")
    else:
        ref = tmp_path / "folder"
        ref.mkdir()
        for i in range(3):
            (ref / f"notes{i}.txt").write_text("not an image")
        why = "no predictions: all 3 records are bad; 3 of them: "
    out = tmp_path / "o.csv"
    local = ["--local"] if mode == "local" else []
    r = cli("predict", ref, "--model", trained_model[1], "--out", out, *local)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    failed = [ln for ln in r.stderr.splitlines() if ln.startswith("digits: failed:")]
    assert len(failed) == 1 and why in failed[0], r.stderr
    r = cli("predict", ref, "--model", trained_model[1], "--out", out, "--json", *local)
    assert r.returncode == 1
    m = json.loads(r.stdout)
    assert m["state"] == "FAILURE" and m["exit_code"] == 1 and why in m["error"]
    assert m["rows_ok"] == 0
    if mode == "queue":
        st = json.loads(cli("status", m["job_id"], "--json").stdout)
        assert st["state"] == "FAILURE" and why in st["error"]


def test_a_chunk_of_garbage_lines_fails_whole_and_the_rest_is_predicted(cli, sample, trained_model, tmp_path):
    """300,000 lines too short to be rows between good rows: their chunks fail whole (bounded
    memory, no retry), the good chunks are predicted, the job ends PARTIAL with one line."""
    x = sample["test_x"][:500]
    rows = tool_files.plain(np.tile(x, (3, 1)))  # 1,500 rows: the planner's 1 MB sample holds rows only
    head, body = rows.split(b"\n", 1)
    ref = tmp_path / "garbage.csv"
    ref.write_bytes(head + b"\n" + body + b"x\n" * 300_000 + body)
    out = tmp_path / "o.csv"
    r = cli("predict", ref, "--model", trained_model[1], "--out", out, "--chunk-rows", 300, "--json")
    assert r.returncode == 1, r.stderr
    m = json.loads(r.stdout)
    assert m["state"] == "PARTIAL" and m["rows_ok"] >= 1500
    assert m["failed_chunks"] and all("more than 100,000 bad records in one chunk" in f["reason"]
                                      for f in m["failed_chunks"])
    assert m["rows_in"] == m["rows_ok"] + m["rows_bad"] + m["rows_failed"] == 300_000 + 3000
    ids, labels = read_submission(out)
    want = np.tile(trained_model[0].predict(x)[0], 3)
    np.testing.assert_array_equal(labels[:1500], want)
    np.testing.assert_array_equal(ids[:1500], np.arange(1, 1501))


def test_8_mb_of_blank_lines_cost_little_in_a_real_job(cli, sample, trained_model, tmp_path):
    """The whole `digits predict --local` process (interpreter, NumPy, model, parse) peaks far
    under 250 MB on a file of two rows around 8 MB of blank lines, and numbers them 1 and 2."""
    import sys
    x = sample["test_x"][:2]
    head, body = tool_files.plain(x).split(b"\n", 1)
    first, second = body.split(b"\n")[:2]
    ref = tmp_path / "blank.csv"
    ref.write_bytes(head + b"\n" + first + b"\n" + b"\n" * (8 << 20) + second + b"\n")
    script = ("import sys; from worker.cli import main; rc = main(sys.argv[1:]); "
              "print([ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0]); "
              "sys.exit(rc)")
    out = tmp_path / "o.csv"
    r = subprocess.run([sys.executable, "-c", script, "predict", str(ref), "--model", trained_model[1],
                        "--out", str(out), "--local"], env=cli.env, capture_output=True, text=True, timeout=WAIT)
    assert r.returncode == 0, r.stderr
    peak_mb = int(r.stdout.split()[-1]) / 1024
    assert peak_mb < 250, f"peak RSS {peak_mb:.0f} MB"
    ids, labels = read_submission(out)
    assert ids.tolist() == [1, 2] and labels.tolist() == trained_model[0].predict(x)[0].tolist()
    print(f"peak RSS of the whole command: {peak_mb:.0f} MB")


def test_records_separated_unlike_their_header_are_refused_at_submit(cli, sample, trained_model, tmp_path):
    head, body = tool_files.plain(sample["test_x"][:5]).split(b"\n", 1)
    ref = tmp_path / "mixed.csv"
    ref.write_bytes(head + b"\n" + body.replace(b",", b";"))
    line = refused_before_anything_starts(cli, tmp_path, "predict", ref, "--model", trained_model[1], "--out",
                                          tmp_path / "o.csv")
    assert "the header is separated by ',' but the first record by ';'" in line

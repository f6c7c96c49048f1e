"""Helpers shared by the benchmarks: data files from ../shared/data, and the seed-style baseline.

The baseline is the original project's style, re-written here to be measured in the same
run: pandas read_csv, float64 features-by-samples arrays (784, N), the same network and
recipe with plain mini-batch gradient descent, np.einsum for the transposes.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("DIGITS_SHARED_DATA", os.path.join(HERE, "..", "..", "shared", "data"))


def parser(doc):
    """An argument parser with the benchmarks' common --data option."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "digits-bench-data"),
                   help="folder for the generated MNIST CSVs (written once)")
    return p


def mnist_csv(folder):
    """Write (once) the full Kaggle-layout train.csv (60,000 rows) and test.csv (10,000) -> folder."""
    if not os.path.exists(os.path.join(folder, "test.csv")):
        os.makedirs(folder, exist_ok=True)
        subprocess.run([sys.executable, os.path.join(SHARED, "mnist.py"), "csv", folder], check=True)
    return os.path.join(folder, "train.csv"), os.path.join(folder, "test.csv")


def repeated_csv(test_csv, path, copies):
    """A test CSV whose rows are test_csv's rows repeated `copies` times (written once, beside
    its path first, so an interrupted write is never taken for the file)."""
    if not os.path.exists(path):
        with open(test_csv, "rb") as f:
            header = f.readline()
            body = f.read()
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(header)
            for _ in range(copies):
                f.write(body)
        os.replace(tmp, path)
    return path


def mnist_rows(folder, rows):
    """A test CSV of about `rows` rows (the 10,000 MNIST test rows repeated, at least once),
    one file per row count under folder, shared by every benchmark -> its path."""
    _, test_csv = mnist_csv(folder)
    copies = max(1, rows // 10000)
    return repeated_csv(test_csv, os.path.join(folder, f"test-{copies * 10000}.csv"), copies)


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


# ----------------------------------------------------------------------------- seed style

def seed_load(train_csv):
    """pandas read_csv -> X (784, N) float64, labels (N,)."""
    df = pd.read_csv(train_csv)
    y = df["label"].to_numpy()
    X = np.ascontiguousarray(np.einsum("ij->ji", df.drop(columns="label").to_numpy().astype(np.float64)))
    return X, y  # (784, N), (N,)


class SeedStyle:
    """The original recipe in the original layout (float64, features by samples), one epoch
    at a time. Construction is the setup: split, z-score, one-hot labels, He init."""

    def __init__(self, X, y, train_idx, val_idx, lr=0.1, batch=64, seed=0):
        rng = np.random.default_rng(seed)
        Xtr, self.ytr = np.ascontiguousarray(X[:, train_idx]), y[train_idx]
        self.mean, self.std = Xtr.mean(), Xtr.std()
        self.Xtr = (Xtr - self.mean) / self.std  # (784, n)
        self.Xva, self.yva = (X[:, val_idx] - self.mean) / self.std, y[val_idx]
        self.Y = np.zeros((10, len(self.ytr)))
        self.Y[self.ytr, np.arange(len(self.ytr))] = 1  # (10, n) one-hot
        self.W1 = rng.standard_normal((128, 784)) * np.sqrt(2 / 784)
        self.b1 = np.zeros((128, 1))
        self.W2 = rng.standard_normal((10, 128)) * np.sqrt(2 / 128)
        self.b2 = np.zeros((10, 1))
        self.lr, self.batch = lr, batch

    def epoch(self):
        """One pass over the training split, then the validation accuracy -> float."""
        W1, b1, W2, b2, lr = self.W1, self.b1, self.W2, self.b2, self.lr
        n = self.Xtr.shape[1]
        for i in range(0, n, self.batch):
            Xb, Yb = self.Xtr[:, i:i + self.batch], self.Y[:, i:i + self.batch]
            m = Xb.shape[1]
            Z1 = W1 @ Xb + b1  # (128, m)
            A1 = np.maximum(Z1, 0)
            Z2 = W2 @ A1 + b2  # (10, m)
            E = np.exp(Z2 - Z2.max(axis=0, keepdims=True))
            A2 = E / E.sum(axis=0, keepdims=True)
            dZ2 = (A2 - Yb) / m
            dW2 = dZ2 @ np.einsum("ij->ji", A1)
            db2 = dZ2.sum(axis=1, keepdims=True)
            dZ1 = (np.einsum("ij->ji", W2) @ dZ2) * (Z1 > 0)
            dW1 = dZ1 @ np.einsum("ij->ji", Xb)
            db1 = dZ1.sum(axis=1, keepdims=True)
            W1 -= lr * dW1
            b1 -= lr * db1
            W2 -= lr * dW2
            b2 -= lr * db2
        pred = (W2 @ np.maximum(W1 @ self.Xva + b1, 0) + b2).argmax(axis=0)
        return float((pred == self.yva).mean())


def seed_predict(test_csv, out_csv, weights):
    """pandas read_csv -> float64 forward pass -> to_csv submission; returns labels."""
    W1, b1, W2, b2, mean, std = weights
    X = np.einsum("ij->ji", pd.read_csv(test_csv).to_numpy().astype(np.float64))  # (784, N)
    X = (X - mean) / std
    labels = (W2 @ np.maximum(W1 @ X + b1, 0) + b2).argmax(axis=0)
    pd.DataFrame({"ImageId": np.arange(1, len(labels) + 1), "Label": labels}).to_csv(out_csv, index=False)
    return labels


# ----------------------------------------------------------------------------- the real stack

REPO = os.path.dirname(HERE)


def user_env(home, **extra):
    """The environment a user's `digits` runs in: this checkout first on the path, no broker
    configured (the embedded stack under `home`), and bytecode caching on (a user's Python
    writes __pycache__; this sandbox sets PYTHONDONTWRITEBYTECODE, which makes every start
    recompile the project's modules)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DIGITS_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""), DIGITS_HOME=str(home),
               **{k: str(v) for k, v in extra.items()})
    return env


def digits_argv(*args):
    """`digits ARGS` as the console script runs it (python -m worker.cli, without a shim)."""
    return [sys.executable, "-m", "worker.cli", *map(str, args)]


class Up:
    """`digits up --no-flower` in a subprocess (as a user runs it), stopped by SIGTERM.

        with Up(home, DIGITS_PREDICT_CONCURRENCY=2) as up:
            up.env, up.worker_pids("worker-predict")
    """

    def __init__(self, home, **extra):
        self.home = str(home)
        self.env = user_env(home, **extra)
        self.proc = None

    def __enter__(self):
        import json
        os.makedirs(self.home, exist_ok=True)
        self.log = open(os.path.join(self.home, "up.out"), "wb")
        self.proc = subprocess.Popen(digits_argv("up", "--no-flower"), env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        record = os.path.join(self.home, "stack.json")
        deadline = time.time() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"digits up exited; see {self.log.name}")
            if os.path.exists(record):
                with open(self.log.name, "rb") as f:
                    if b"ready:" in f.read():
                        break
            if time.time() > deadline:
                raise RuntimeError(f"digits up did not get ready; see {self.log.name}")
            time.sleep(0.1)
        with open(record) as f:
            self.record = json.load(f)
        return self

    def worker_pids(self, name="worker-predict"):
        """PIDs of a worker service's process and its pool processes."""
        import psutil
        pid = self.record["children"][name][0]  # [pid, start time]
        proc = psutil.Process(pid)
        return [pid] + [c.pid for c in proc.children(recursive=True)]

    def __exit__(self, *exc):
        import signal
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def run_child(argv, env):
    """Run a command to its end -> (wall seconds, the child's own peak RSS in MB, returncode,
    stdout, stderr). The peak is this child's (os.wait4), not the largest of all children."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return wall, usage.ru_maxrss / 1024, proc.returncode, out.read().decode(), err.read().decode()


def vm_hwm_mb(pids):
    """The largest peak RSS (VmHWM) among processes -> MB."""
    peaks = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
        except OSError:  # the process ended meanwhile: it has no peak to report
            pass
    return max(peaks) if peaks else float("nan")


def figures(name, **values):
    """Print one machine-readable line of a benchmark's figures (bench/run_all.py reads it)."""
    import json
    print(f"FIGURES {name} {json.dumps(values, sort_keys=True)}", flush=True)


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return (xs[n // 2] + xs[(n - 1) // 2]) / 2


def save_seed_weights(weights, path):
    """seed_predict's weights tuple -> an .npz for the seed-style script (seed_script_argv)."""
    W1, b1, W2, b2, mean, std = weights
    np.savez(path, W1=W1, b1=b1, W2=W2, b2=b2, mean=mean, std=std)
    return path


def seed_script_argv(csv, out, weights_npz):
    """The seed style as the command a seed-project user runs (`python predict.py`): a fresh
    interpreter that imports pandas and NumPy, then seed_predict."""
    code = ("import sys; sys.path.insert(0, sys.argv[4]); import numpy as np; "
            "from bench.common import seed_predict; w = np.load(sys.argv[3]); "
            "seed_predict(sys.argv[1], sys.argv[2], (w['W1'], w['b1'], w['W2'], w['b2'], "
            "float(w['mean']), float(w['std'])))")
    return [sys.executable, "-c", code, str(csv), str(out), str(weights_npz), REPO]


def sample_model(path, epochs=1):
    """A real model for the queue benchmarks: the faithful recipe for `epochs` epochs on the
    bundled sample, written to `path` -> path."""
    from model import checkpoint
    from model.data.samples import load_sample
    from model.train import Trainer, make_config
    s = load_sample()
    t = Trainer(make_config("faithful", epochs=epochs), s["train_x"], s["train_y"])
    t.run()
    checkpoint.save_model(checkpoint.make_model(t.params, t.mean, t.std, recipe="faithful"), path)
    return path

"""The Python API in one class: `from worker.client import Client`.

    with Client() as c:                      # the configured broker, a running `digits up`,
        c.train("train.csv", name="digits")  # or a temporary embedded stack for the block
        c.predict("test.csv", model="digits", out="submission.csv")   # -> the job's manifest
        c.predict(frame, model="digits")     # DataFrame or (n, 784) array -> DataFrame
        c.jobs(), c.status(job_id), c.cancel(job_id)

Built on what the command line uses: worker.stack.broker.reachable finds or starts the broker,
worker.client's submit_prediction / submit_training queue the jobs and their handles wait,
the `digits jobs` listing lists them. Jobs live on shared storage, so `digits status` and
Flower see the same jobs as this client.
"""
import os
import tempfile

from model.errors import DataError, JobError
from tasks.states import JobState

PIXELS = 784  # 28 x 28, one row per image (model.data.block.SIDE squared)


class Client:
    """A client of the queue, used as a context manager (or open() ... close()).

    settings: a worker.settings.Settings (default: settings.load(), from DIGITS_* variables).
    log: where a started stack says what it does (default: nothing).
    """

    def __init__(self, settings=None, log=None):
        from worker import settings as settings_mod
        self.settings = settings or settings_mod.load()
        self._log = log or (lambda *a, **k: None)
        self._stack = None
        self.app = None
        self.broker_url = None

    def open(self):
        """Reach a broker (starting a temporary embedded stack when none runs) -> self."""
        if self.app is not None:
            return self
        from worker.app import configure
        from worker.stack import broker
        self._stack = broker.reachable(self.settings, log=self._log)
        info = self._stack.__enter__()
        try:
            self.broker_url = info["broker_url"]
            self.app = configure(self.broker_url)
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        """Close the broker connections, and stop the stack if this client started it."""
        app, self.app = self.app, None
        if app is not None:
            app.close()
        if self._stack is not None:
            ctx, self._stack = self._stack, None
            ctx.__exit__(None, None, None)

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def _app(self):
        if self.app is None:
            raise JobError("the client is closed: use it as `with Client() as c:` or call open()")
        return self.app

    # ------------------------------------------------------------------ jobs

    def predict(self, source, model="digits", out=None, *, wait=True, timeout=None, job_id=None,
                chunk_rows=None):
        """Bulk prediction through the queue.

        source: a CSV path or URL, or an image folder -> with wait, the job's manifest
        ({"job_id", "state", "rows_in", "rows_ok", "rows_bad", "output", "errors", ...});
        without, the job handle (worker.client.handles.PredictionJob: progress(), wait(), cancel()).
        out is required for a path (the output CSV).
        source: a pandas DataFrame (columns pixel0..pixel783, or 784 columns; a `label` column
        is ignored) or a NumPy array (n, 784) -> a DataFrame with one row per input row:
        ImageId (1-based), Label (<NA> for a bad row) and confidence (NaN for a bad row);
        frame.attrs["errors"] maps each bad row's ImageId to its reason, frame.attrs["manifest"]
        is the job's manifest.
        """
        if not isinstance(source, (str, os.PathLike)):
            return self._predict_frame(source, model, timeout, chunk_rows)
        if out is None:
            raise JobError("predict(path) needs out=, the output CSV file")
        from worker.client.submission import submit_prediction
        job = submit_prediction(str(source), model, str(out), app=self._app(), settings=self.settings,
                                job_id=job_id, chunk_rows=chunk_rows)
        return job.wait(timeout=timeout) if wait else job

    def train(self, data, name="digits", recipe="default", *, wait=True, timeout=None, skip_bad=False,
              job_id=None, **options):
        """A training job of model `name` on `data` (a labeled CSV or a folder of digit
        sub-folders). options: training options on top of the recipe (epochs, lr, batch_size,
        seed, ...; an unknown one is a ConfigError) -> with wait, the manifest ({"version",
        "val_accuracy", "promotion", "report", ...}); without, the job handle. A cancelled
        run's manifest has state CANCELLED; a failed run raises JobError."""
        from model.train import make_config
        from worker.client.submission import submit_training
        config = make_config(recipe, **options)
        job = submit_training(data, name, config, app=self._app(), settings=self.settings, skip_bad=skip_bad,
                              job_id=job_id)
        return job.wait(timeout=timeout) if wait else job

    def jobs(self, state=None, kind=None, since=None, limit=None):
        """Recent jobs, newest first, as `digits jobs --json` lists them -> list of dicts.
        since: seconds, or a duration text such as "2h"."""
        from worker.cli.jobs import list_jobs
        from worker.settings import parse_duration
        if isinstance(since, str):
            since = parse_duration(since, "since")
        return list_jobs(self.settings, state=state, kind=kind, since=since, limit=limit)

    def status(self, job_id):
        """A job's state, progress and, once ended, its manifest's fields -> dict."""
        from worker.client.handles import status
        return status(self.app, self.settings, job_id)

    def job(self, job_id):
        """The handle of an existing job (progress(), wait(), result(), cancel())."""
        from worker.client.handles import open_job
        return open_job(self._app(), self.settings, job_id)

    def cancel(self, job_id):
        """Ask a job to stop (finished work is kept) -> False when it had already ended."""
        from tasks import jobfiles, records
        records.read_job(self.settings.storage, job_id)  # JobError for an unknown job
        if jobfiles.read_manifest(self.settings.storage, job_id):
            return False
        jobfiles.request_cancel(self.settings.storage, job_id)
        return True

    # ------------------------------------------------------------------ frames

    def _predict_frame(self, frame, model, timeout, chunk_rows):
        """predict() of a DataFrame or array: written as a Kaggle test CSV to a temporary
        folder, predicted as a job, read back with each row's confidence."""
        import pandas as pd
        pixels = pixel_frame(frame)
        with tempfile.TemporaryDirectory(prefix="digits-frame-") as tmp:
            path, out = os.path.join(tmp, "input.csv"), os.path.join(tmp, "predictions.csv")
            pixels.to_csv(path, index=False)
            manifest = self.predict(path, model, out, timeout=timeout, chunk_rows=chunk_rows)
            labels = pd.read_csv(out)
            errors = {}
            if manifest.get("errors"):
                bad = pd.read_csv(manifest["errors"])
                errors = {int(row): reason for row, reason in zip(bad["row"], bad["reason"])}
        n = len(pixels)
        result = pd.DataFrame({"ImageId": range(1, n + 1)})
        result["Label"] = pd.array([pd.NA] * n, dtype="Int64")
        result.loc[labels["ImageId"] - 1, "Label"] = labels["Label"].to_numpy()
        result["confidence"] = _confidences(self.settings.storage, manifest["job_id"], n)
        result.loc[result["Label"].isna(), "confidence"] = float("nan")
        result.attrs.update(errors=errors, manifest=manifest)
        return result


def pixel_frame(frame):
    """A DataFrame or array of images -> a DataFrame with columns pixel0..pixel783 (the
    Kaggle test layout); DataError naming the shape or the missing columns otherwise."""
    import numpy as np
    import pandas as pd
    names = [f"pixel{i}" for i in range(PIXELS)]
    if isinstance(frame, pd.DataFrame):
        if set(names) <= set(map(str, frame.columns)):
            return frame.rename(columns=str)[names]
        cols = [c for c in frame.columns if str(c).lower() != "label"]
        if len(cols) != PIXELS:
            raise DataError("DataFrame", f"{len(cols)} pixel columns; expected pixel0..pixel783 or {PIXELS} columns")
        return frame[cols].set_axis(names, axis=1)
    arr = np.asarray(frame)
    if arr.ndim == 3 and arr.shape[1:] == (28, 28):
        arr = arr.reshape(len(arr), PIXELS)  # (n, 784) = (n, 28, 28)
    if arr.ndim != 2 or arr.shape[1] != PIXELS:
        raise DataError("array", f"shape {arr.shape}; expected (n, {PIXELS}) or (n, 28, 28)")
    return pd.DataFrame(arr, columns=names)


def _confidences(root, job_id, n):
    """Each record's confidence from the job's chunk results (storage), in input order ->
    (n,) float array; NaN for records of a chunk whose result is gone (a failed chunk)."""
    import numpy as np

    from model import batch
    from tasks import jobfiles
    conf = np.full(n, np.nan)  # (n,)
    plan = jobfiles.read_json(jobfiles.ref(root, job_id, "plan.json")) or {}
    first = 0
    for index in range(len(plan.get("chunks", []))):
        try:
            r = batch.ChunkResult.from_bytes(jobfiles.read_chunk(root, job_id, index))
        except Exception:  # a failed chunk left no result: its rows' count is unknown here
            break
        conf[first:first + len(r)] = r.confidence[:n - first]
        first += len(r)
    return conf


__all__ = ["Client", "JobState"]

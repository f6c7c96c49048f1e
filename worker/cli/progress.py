"""Progress on stderr: one bar for every job kind, worded by the kind's own formatter.

`predict`, `train`, `watch` (and `--local` runs) draw a JobBar; `status` and Flower print
the same text (tasks.records PredictJob/TrainJob.progress_text). The bar counts what the job
counts (chunks or batches), shows no rate, and an ETA only once enough work was measured
(tasks.times.eta_seconds), so a first frame never says hours.
"""
import sys
import threading
import time

from tqdm import tqdm

from tasks import records, states, times
from tasks.states import JobState
from worker.cli.common import eprint

BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}]{postfix}"


class _Tqdm(tqdm):
    """tqdm for one process's bars: no monitor thread, a thread lock instead of the
    multiprocessing lock tqdm makes by default (its first bar took 5 ms instead of 0.4 ms,
    spent on the client's core while the workers start a job)."""
    monitor_interval = 0


_Tqdm.set_lock(threading.RLock())


class JobBar:
    """A bar drawn from a job's progress dicts: update(kind, progress). Nothing is drawn
    before a progress with a known total arrives (a command failing first draws no bar).
    Redrawn at most every `every` seconds, and always when forced or at an epoch's end."""

    def __init__(self, label, every=0.1):
        self.label, self.every = label, every
        self.bar = None
        self.last = float("-inf")
        self.first = None  # (monotonic time, done) of the first frame, for the ETA

    def update(self, kind, progress, state=None, force=False):
        cls = records.KINDS[kind]
        done, total = cls.bar(progress)
        if not total:
            return
        now = time.monotonic()
        epoch_end = progress.get("batch") is not None and progress.get("batch") == progress.get("batches")
        if not (force or epoch_end or done == total) and now - self.last < self.every:
            return
        self.last = now
        if self.bar is None:
            self.bar = _Tqdm(total=total, initial=done, unit=cls.unit, desc=self.label, file=sys.stderr, dynamic_ncols=True,
                            bar_format=BAR_FORMAT)
            self.first = (now, done)
        if state in states.FINAL:  # ended: no time is left, whatever the last update said
            progress = {k: v for k, v in progress.items() if k != "eta_seconds"}
        elif "eta_seconds" not in progress:  # no worker measured one (a --local run): measured here
            progress = dict(progress, eta_seconds=times.eta_seconds(done, total, now - self.first[0], self.first[1]))
        self.bar.total, self.bar.n = total, done
        text = cls.progress_text(progress)
        if state and state not in (JobState.PROGRESS, JobState.SUCCESS):
            text = f"{state.lower()} {text}"
        self.bar.set_postfix_str(text, refresh=False)
        self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def wait(job, label, settle=0.0):
    """Wait for a queued job with its bar -> the manifest (settle: see Job.wait)."""
    bar = JobBar(label)
    said = []

    def on_progress(st):
        bar.update(st["kind"], st.get("progress") or {}, st["state"])
        if st.get("stopping") and not said:  # the job stops early (a full disk): say why, once
            eprint(f"job {st['job_id']} {st['stopping']}")
            said.append(True)
    try:
        return job.wait(on_progress=on_progress, settle=settle)
    finally:
        bar.close()


def predict_wait(job, label):
    """wait() for a prediction just submitted (its first poll after 0.25 s or its end, so
    that a short job runs with the client idle), then one line: rows and rows per second."""
    t0 = time.time()
    manifest = wait(job, label, settle=0.25)
    rows = manifest.get("rows_in", 0)
    secs = time.time() - t0
    eprint(f"{rows} rows in {secs:.2f}s ({rows / max(secs, 1e-9):,.0f} rows/s)")
    return manifest


train_wait = wait

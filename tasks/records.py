"""Job records: what a job is, how far it got, and how it ended.

    jobs/<id>/job.json         the job as submitted (PredictJob / TrainJob.to_dict())
    jobs/<id>/manifest.json    how the job ended: state, counts, output, timings

Times in records are epoch seconds (the Python API computes with them); what a person reads
shows them as ISO-8601 UTC (tasks.times.iso_times). One dataclass per kind owns its job.json
schema, its manifest, its states and how its progress reads: PredictJob, TrainJob; KINDS
maps a record's "kind" to its class. Where the files live: tasks.jobfiles.
"""
import dataclasses
import time
from dataclasses import dataclass
from typing import ClassVar

from model import storage
from model.errors import JobError
from tasks.jobfiles import (
    chunks_done,
    full_ref,
    is_cancelled,
    job_dir,
    read_json,
    ref,
    write_index,
    write_json,
)
from tasks.states import JobState
from tasks.times import format_seconds


def _fields(cls, d):
    """The dataclass fields of cls present in dict d (others are ignored; missing ones take
    their defaults, so a record written by an older version still reads)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass
class _Record:
    job_id: str
    submitted_at: float = None  # epoch seconds
    output: str = None  # where the workers write the result

    kind: ClassVar[str] = ""
    unit: ClassVar[str] = ""  # what its progress bar counts

    @classmethod
    def from_dict(cls, d):
        return cls(**_fields(cls, d))

    def to_dict(self):
        """The job.json of this record."""
        return dict(dataclasses.asdict(self), kind=self.kind)

    @property
    def user_output(self):
        """Where the user finds the result."""
        return self.output

    def output_of(self, manifest):
        """Where the user finds the result of an ended job."""
        return manifest.get("output") or self.user_output

    def write(self, root):
        """Write job.json and the job's index entry (a job just submitted)."""
        write_json(ref(root, self.job_id, "job.json"), self.to_dict())
        write_index(root, self)

    def storage_state(self, root, progress):
        """The state of an unfinished job as storage alone tells it."""
        if is_cancelled(root, self.job_id):
            return JobState.CANCELLING
        return JobState.PROGRESS if self.started(progress) else JobState.PENDING

    def base_manifest(self, state, **fields):
        """Fields every manifest has."""
        m = dict(fields)
        m.update(job_id=self.job_id, kind=self.kind, state=state, submitted_at=self.submitted_at,
                 finished_at=time.time())
        return m

    def failure_manifest(self, error):
        """The manifest of a job that failed as a whole (error: one line)."""
        return self.base_manifest(JobState.FAILURE, error=error)

    def index_entry(self, manifest=None):
        """The job's line in `digits jobs`: kind, state, times, output, model, counts."""
        m = manifest or {}
        entry = {"job_id": self.job_id, "kind": self.kind, "state": m.get("state", JobState.PENDING),
                 "submitted_at": self.submitted_at, "finished_at": m.get("finished_at"),
                 "output": (self.output_of(m) if manifest else None) or self.user_output, "error": m.get("error")}
        if self.output != self.user_output:
            entry["storage_output"] = self.output
        return entry


@dataclass
class PredictJob(_Record):
    """A bulk prediction: an input planned into chunks, a model, an output.

    States: PENDING, PROGRESS, CANCELLING; then SUCCESS, PARTIAL (a chunk failed for good),
    CANCELLED or FAILURE (the output could not be written)."""

    input: str = None  # what the workers read (staged to storage when needed)
    model: dict = None  # {"ref", "version", "name", "registry_version", "requested"}
    download_to: str = None  # the user's --out
    chunks: int = 0
    input_kind: str = None  # "csv" or "images"
    window: int = None  # chunks of the job in the queue at once

    kind: ClassVar[str] = "predict"
    unit: ClassVar[str] = "chunks"

    @property
    def user_output(self):
        return self.download_to or self.output

    def output_of(self, manifest):
        return self.download_to or manifest.get("output")

    def progress(self, root):
        done = chunks_done(root, self.job_id)
        return {"chunks_done": done, "chunks": self.chunks,
                "fraction": round(done / self.chunks, 4) if self.chunks else 1.0}

    @staticmethod
    def started(progress):
        return bool(progress.get("chunks_done"))

    @staticmethod
    def bar(progress):
        """(done, total) of a progress bar."""
        return progress.get("chunks_done", 0), progress.get("chunks") or 0

    @staticmethod
    def progress_text(progress):
        """"chunks 47/101 done, 1 failed, 1 retrying, eta 6s" (zero counts left out; the ETA
        once one is known: the workers measure it, tasks.events)."""
        text = f"chunks {progress.get('chunks_done', 0)}/{progress.get('chunks', 0)} done"
        for k in ("failed", "retrying", "skipped"):
            if progress.get(k):
                text += f", {progress[k]} {k}"
        if progress.get("eta_seconds") is not None:
            text += f", eta {format_seconds(progress['eta_seconds'])}"
        return text

    def manifest(self, counts, state, chunks_done, chunk_seconds, assemble_seconds, error=None):
        """How the job ended: counts (model.batch.assemble: rows_in = rows_ok + rows_bad +
        rows_failed (+ rows_skipped), output, errors) plus state, input, model and timings."""
        m = self.base_manifest(state, **counts, input=self.input, model=self.model, chunks=self.chunks,
                               chunks_done=chunks_done)
        m["timings"] = {"chunk_seconds": round(chunk_seconds, 3), "assemble_seconds": round(assemble_seconds, 3),
                        "wall_seconds": round(m["finished_at"] - self.submitted_at, 3)}
        if error:
            m["error"] = error
        return m

    @staticmethod
    def summary(manifest):
        """One line on how the job ended, key facts first, zero counts left out (Flower's
        Result of the job and of its assemble): "10000 rows in: 9998 ok, 2 bad; output
        /data/out.csv; 3.2s", or the one-line reason of a PARTIAL or FAILED job."""
        if manifest.get("rows_in") is None:  # failed before counting (the output cannot be written)
            return manifest.get("error") or str(manifest.get("state"))
        text = f"{manifest['rows_in']} rows in: {manifest.get('rows_ok', 0)} ok"
        for k in ("bad", "failed", "skipped"):
            if manifest.get(f"rows_{k}"):
                text += f", {manifest[f'rows_{k}']} {k}"
        text += f"; output {manifest.get('output')}"
        seconds = (manifest.get("timings") or {}).get("wall_seconds")
        if seconds is not None:
            text += f"; {format_seconds(seconds)}"
        if manifest.get("error"):
            text = f"{manifest['error']} ({text})"
        return text

    @staticmethod
    def result_lines(manifest):
        """What a person reads of an ended job, a line each."""
        keys = ("rows_in", "rows_ok", "rows_bad", "rows_failed", "rows_skipped", "errors", "error")
        return [f"{k}: {manifest[k]}" for k in keys if manifest.get(k) is not None]

    @staticmethod
    def amount_text(entry):
        """The ROWS/EPOCHS cell of `digits jobs`: "500 rows (3 bad, 0 failed)"."""
        text = f"{entry['rows_in']} rows" if entry.get("rows_in") is not None else f"{entry.get('chunks')} chunks"
        if entry.get("rows_bad") or entry.get("rows_failed"):
            text += f" ({entry.get('rows_bad') or 0} bad, {entry.get('rows_failed') or 0} failed)"
        return text

    def index_entry(self, manifest=None):
        m = manifest or {}
        model = self.model or {}
        entry = super().index_entry(manifest)
        entry.update(input=self.input, chunks=self.chunks, model=model.get("name") or model.get("ref"),
                     version=model.get("registry_version") or model.get("version"),
                     rows_in=m.get("rows_in"), rows_ok=m.get("rows_ok"), rows_bad=m.get("rows_bad"),
                     rows_failed=m.get("rows_failed"))
        return entry


@dataclass
class TrainJob(_Record):
    """A training run of model `name` on `data` with a TrainConfig dict.

    States: PENDING, PROGRESS, CANCELLING; then SUCCESS (a version registered), CANCELLED
    (checkpoint kept: resubmitting the id resumes) or FAILURE."""

    name: str = None  # the registry name the run registers under
    data: str = None  # training data the workers read
    config: dict = None  # TrainConfig.to_dict()
    skip_bad: bool = False
    checkpoint_every: int = 1
    sweep: str = None  # the id of the sweep this run belongs to (tasks.sweep), if any

    kind: ClassVar[str] = "train"
    unit: ClassVar[str] = "batches"

    @classmethod
    def new(cls, job_id, name, data, config, skip_bad=False, checkpoint_every=1, sweep=None):
        """A record submitted now; its output is the model's registry folder."""
        return cls(job_id=job_id, name=name, data=data, config=config, skip_bad=skip_bad,
                   checkpoint_every=checkpoint_every, submitted_at=time.time(), output=f"models/{name}",
                   sweep=sweep)

    def write(self, root):
        """As _Record.write, with the output (the model's registry folder) as a full path or URL."""
        self.output = full_ref(root, self.output)
        super().write(root)

    def progress(self, root):
        return read_json(ref(root, self.job_id, "progress.json"), {})

    @staticmethod
    def started(progress):
        return bool(progress)

    @staticmethod
    def bar(progress):
        if "epoch" not in progress:
            return 0, 0
        return (progress["epoch"] - 1) * progress["batches"] + progress["batch"], \
            progress["epochs"] * progress["batches"]

    @staticmethod
    def progress_text(p):
        """One line a person reads, in Flower's Result field and in the command line:
        "epoch 3/10 batch 400/844 loss 0.0812 val_accuracy 0.9741 eta 21s"."""
        if "epoch" not in p:
            return p.get("state", "") if isinstance(p, dict) else ""
        text = f"epoch {p['epoch']}/{p['epochs']} batch {p['batch']}/{p['batches']} loss {p['loss']:.4f}"
        if p.get("val_accuracy") is not None:
            text += f" val_accuracy {p['val_accuracy']:.4f}"
        if p.get("eta_seconds") is not None:
            text += f" eta {format_seconds(p['eta_seconds'])}"
        return text

    def manifest(self, state, history, skipped_records, seconds, registered=None, checkpoint=None,
                 started_at=None):
        """How the run ended. registered: the registry entry of the new version (SUCCESS);
        checkpoint: the training state a cancelled run resumes from; started_at: when this
        delivery began (epoch seconds)."""
        m = self.base_manifest(state, name=self.name, data=self.data, epochs_done=len(history),
                               skipped_records=skipped_records, history=history, seconds=round(seconds, 3),
                               started_at=started_at, sweep=self.sweep)
        if checkpoint:
            m["checkpoint"] = checkpoint
        if registered:
            m.update(version=registered["version"], val_accuracy=history[-1]["val_accuracy"] if history else None,
                     promotion=registered.get("promotion"), model=registered.get("model"),
                     report=registered.get("report"), output=registered.get("path"))
        return m

    @staticmethod
    def promotion_text(promotion):
        """"promoted to production (reason)", "not promoted (reason)", or "promotion deferred
        (reason)" for a sweep's run until its sweep has offered its best run to the gate."""
        if not promotion:
            return ""
        verdict = "promoted to production" if promotion.get("promoted") else \
            "promotion deferred" if promotion.get("deferred") else "not promoted"
        return f"{verdict} ({promotion.get('reason', '')})"

    @staticmethod
    def summary(manifest):
        """One line on how a run ended, key facts first (Flower's Result): "digits:4
        val_accuracy 0.9450, not promoted (...); 45 epochs, 12 skipped records, 12.5s;
        report .../report.html"; a failed run's reason, a cancelled run's checkpoint. The
        full history stays in the manifest on storage."""
        state, m = manifest.get("state"), manifest
        epochs = f"{m['epochs_done']} epochs" if m.get("epochs_done") is not None else None
        facts = [x for x in (epochs, f"{m['skipped_records']} skipped records" if m.get("skipped_records") else None,
                             format_seconds(m["seconds"]) if m.get("seconds") is not None else None) if x]
        if state == JobState.FAILURE:
            return f"failed: {m.get('error')}"
        if state == JobState.CANCELLED:
            return "; ".join([f"cancelled after {', '.join(facts)}" if facts else "cancelled",
                              f"checkpoint {m.get('checkpoint')}"])
        head = f"{m.get('name')}:{m.get('version')}"
        if m.get("val_accuracy") is not None:
            head += f" val_accuracy {m['val_accuracy']:.4f}"
        if m.get("promotion"):
            head += f", {TrainJob.promotion_text(m['promotion'])}"
        return "; ".join([head] + ([", ".join(facts)] if facts else []) +
                         ([f"report {m['report']}"] if m.get("report") else []))

    @classmethod
    def result_lines(cls, manifest):
        lines = []
        if manifest.get("version") is not None:
            acc = manifest.get("val_accuracy")
            lines.append(f"model {manifest.get('name')} version {manifest['version']}: val_accuracy "
                         f"{acc:.4f}; {cls.promotion_text(manifest.get('promotion'))}" if acc is not None else
                         f"model {manifest.get('name')} version {manifest['version']}")
        if manifest.get("report"):
            lines.append(f"report: {manifest['report']}")
        if manifest.get("state") == JobState.CANCELLED:
            lines.append(f"cancelled after {manifest.get('epochs_done')} epochs; checkpoint kept at "
                         f"{manifest.get('checkpoint')} (resubmit the job id to resume)")
        if manifest.get("error"):
            lines.append(f"error: {manifest['error']}")
        return lines

    @staticmethod
    def amount_text(entry):
        """The ROWS/EPOCHS cell of `digits jobs`: "15/15 epochs val 0.9832 promoted"."""
        done = entry.get("epochs_done")
        text = f"{done if done is not None else '-'}/{entry.get('epochs')} epochs"
        if entry.get("val_accuracy") is not None:
            text += f" val {entry['val_accuracy']:.4f}"
        if entry.get("promoted") is not None:
            text += " promoted" if entry["promoted"] else " not promoted"
        return text

    def index_entry(self, manifest=None):
        m = manifest or {}
        entry = super().index_entry(manifest)
        promo = m.get("promotion") or {}
        entry.update(input=self.data, model=self.name, version=m.get("version"),
                     recipe=(self.config or {}).get("recipe"), epochs=(self.config or {}).get("epochs"),
                     epochs_done=m.get("epochs_done"), val_accuracy=m.get("val_accuracy"),
                     promoted=None if promo.get("deferred") else promo.get("promoted"), sweep=self.sweep)
        return entry


KINDS = {cls.kind: cls for cls in (PredictJob, TrainJob)}


def record_from_dict(d):
    """A job.json dict -> its typed record; JobError for an unknown kind."""
    try:
        cls = KINDS[d.get("kind")]
    except KeyError:
        raise JobError(f"job {d.get('job_id')!r} has unknown kind {d.get('kind')!r}") from None
    return cls.from_dict(d)


def read_job(root, job_id):
    """The job.json dict; JobError if there is none."""
    job = read_json(ref(root, job_id, "job.json"))
    if job is None:
        raise JobError(f"unknown job {job_id!r} (no record under {job_dir(root, job_id)})")
    return job


def load(root, job_id):
    """The typed record (PredictJob or TrainJob) of a job; JobError if there is none."""
    return record_from_dict(read_job(root, job_id))


def write_manifest(root, job_id, manifest):
    """Write how the job ended, then its index entry."""
    write_json(ref(root, job_id, "manifest.json"), manifest)
    record = read_json(ref(root, job_id, "job.json"))
    if record is not None:
        write_index(root, record_from_dict(record), manifest)


def reopen(root, job_id):
    """Make an ended job runnable again: drop its cancel request, then its manifest."""
    storage.remove(ref(root, job_id, "cancel"))
    storage.remove(ref(root, job_id, "manifest.json"))
    record = read_json(ref(root, job_id, "job.json"))
    if record is not None:
        write_index(root, record_from_dict(record))

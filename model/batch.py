"""Bulk prediction in three steps, shared by the queue and the in-process path.

    source = sources.open_source(input, chunk_rows, chunk_images)   the plan: chunks of a
                                       CSV (byte ranges) or an image folder (list slices)
    predict_chunk(source, i, model) -> ChunkResult of chunk i (bad records as data)
    assemble(source, outcomes, out) -> output file in input order, errors file, counts
    run(source, model, out)         -> the in-process path: each chunk contained, then assemble

Outputs: for a CSV, a Kaggle submission `ImageId,Label` (ImageId = 1-based data row);
for an image folder, `path,label,confidence,preprocessing` (path relative to the folder;
preprocessing says what was done to an image that was not MNIST-style). Bad records
go to `<out without .csv>.errors.csv` with columns `row,reason` or `path,reason`, and so
do the records of a chunk that failed as a whole (reason "chunk N failed: ...").
"""
import io
import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from model import storage
from model.errors import describe
from model.data.csvout import csv_cell

@dataclass
class ChunkResult:
    """Predictions of one chunk, in input order."""

    labels: np.ndarray  # (n,) int16, -1 for bad records
    confidence: np.ndarray  # (n,) float32, 0 for bad records
    errors: dict  # record index within the chunk -> reason
    notes: dict = field(default_factory=dict)  # record index -> what preprocessing did to it

    def __len__(self):
        return len(self.labels)

    def to_bytes(self):
        """-> the stored form: _MAGIC, a 4-byte little-endian length, a JSON header
        {"n", "errors", "notes"}, then the labels (n int16) and confidences (n float32),
        little-endian. A few µs each way, against 0.1-0.2 ms for an .npz."""
        head = json.dumps({"n": len(self.labels), "errors": {str(k): v for k, v in self.errors.items()},
                           "notes": {str(k): v for k, v in self.notes.items()}}).encode()
        return b"".join((_MAGIC, len(head).to_bytes(4, "little"), head,
                         self.labels.astype("<i2", copy=False).tobytes(),
                         self.confidence.astype("<f4", copy=False).tobytes()))

    @classmethod
    def from_bytes(cls, raw):
        """to_bytes' form -> ChunkResult (an .npz, as earlier versions stored, is read too);
        ValueError for any other bytes, one cut short among them."""
        if raw.startswith(b"PK"):
            return cls._from_npz(raw)
        if not raw.startswith(_MAGIC):
            raise ValueError("not a chunk result")
        at = len(_MAGIC) + 4
        size = int.from_bytes(raw[len(_MAGIC):at], "little")
        try:
            head = json.loads(raw[at:at + size])
            n, errors, notes = int(head["n"]), head["errors"], head["notes"]
            errors, notes = {int(k): v for k, v in errors.items()}, {int(k): v for k, v in notes.items()}
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"a chunk result with an unreadable header ({describe(e)})") from None
        at += size
        if n < 0 or len(raw) != at + 6 * n:
            raise ValueError(f"a chunk result of {n} records in {len(raw)} bytes: cut short or damaged")
        labels = np.frombuffer(raw, "<i2", n, at).astype(np.int16)  # (n,) a writable copy
        confidence = np.frombuffer(raw, "<f4", n, at + 2 * n).astype(np.float32)  # (n,)
        return cls(labels, confidence, errors, notes)

    @classmethod
    def _from_npz(cls, raw):
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                errors = {int(k): v for k, v in json.loads(str(z["errors"])).items()}
                notes = {int(k): v for k, v in json.loads(str(z["notes"])).items()} if "notes" in z.files else {}
                return cls(z["labels"], z["confidence"], errors, notes)
        except Exception as e:  # a damaged zip fails in many ways: each is an unreadable result
            raise ValueError(f"an unreadable chunk result ({describe(e)})") from None


_MAGIC = b"digits-chunk-result 1\n"
_LINES_AT_ONCE = 4096  # errors lines joined into one write


@dataclass
class ChunkFailure:
    """A chunk that failed as a whole, for a reason tied to no single record."""

    reason: str  # one line, naming the path for storage errors
    rows: int | None = None  # its record count, when known


def predict_block(block, model):
    """Predict the good records of a Block -> ChunkResult."""
    n = len(block)
    labels = np.full(n, -1, np.int16)  # (n,)
    confidence = np.zeros(n, np.float32)  # (n,)
    ok = block.ok_mask()
    if ok.any():
        lab, conf = model.predict(block.pixels[ok])  # (n_ok,), (n_ok,)
        labels[ok] = lab
        confidence[ok] = conf
    return ChunkResult(labels, confidence, dict(block.errors), dict(block.notes))


def predict_chunk(source, index, model):
    """Read and predict chunk `index` of a source -> ChunkResult."""
    return predict_block(source.read(index), model)


def errors_ref(out_ref):
    """Where the errors of an output go: <out without .csv>.errors.csv."""
    out_ref = str(out_ref)
    stem = out_ref[:-4] if out_ref.lower().endswith(".csv") else out_ref
    return stem + ".errors.csv"


def _count(source, index):
    """Records of chunk `index`, or None when its input cannot be read any more."""
    try:
        return source.length(index)
    except Exception:  # the input is gone or unreadable: the caller reports the count as unknown
        return None


def assemble(source, outcomes, out_ref):
    """Write the output of a source from its chunks' outcomes (an iterable in chunk order)
    -> counts.

    An outcome is a ChunkResult; a ChunkFailure (its records go to the errors file with
    the chunk's reason); or None for a chunk that never ran (a cancelled job: its records
    count in rows_skipped). Records after either keep their own row numbers. Counts:
    {"rows_in", "rows_ok", "rows_bad", "rows_failed", "rows_skipped", "failed_chunks",
    "output", "errors"}: rows_in = rows_ok + rows_bad + rows_failed; failed_chunks lists
    {"chunk", "where", "reason", "rows"}; "errors" is the errors file, or None when every
    record was good (a stale errors file is then removed).

    When a failed or skipped CSV chunk cannot even be counted (its input is unreadable),
    the row numbers after it are unknown: later chunks' records are then reported as
    failed too, one errors line per chunk, instead of being written under wrong numbers.
    """
    out_file = storage.AtomicFile(out_ref)  # streamed: memory stays flat however many rows
    err_ref = errors_ref(out_ref)
    try:
        bad_file = storage.AtomicFile(err_ref)
    except BaseException:
        out_file.discard()
        raise
    try:
        counts = _assemble(source, outcomes, out_file, bad_file)
        out_file.commit()
        if counts["rows_bad"] or counts["failed_chunks"]:
            bad_file.commit()
        else:
            bad_file.discard()
            storage.remove(err_ref)
            err_ref = None
    finally:
        out_file.discard()
        bad_file.discard()
    notes = source.notes() if hasattr(source, "notes") else []
    return dict(counts, output=str(out_ref), errors=err_ref, **({"read_as": notes} if notes else {}))


def _assemble(source, outcomes, out_file, bad_file):
    """assemble's loop: writes the output's and the errors' lines -> counts."""
    bad = io.TextIOWrapper(bad_file.file, encoding="utf-8", newline="", write_through=True)
    try:
        return _write_outcomes(source, outcomes, out_file, bad)
    finally:  # the AtomicFile owns the file: flush the wrapper and let go of it
        bad.flush()
        bad.detach()


def _write_outcomes(source, outcomes, out, bad):
    """out: the output's binary file; bad: the errors' text file."""
    def bad_rows(rows):  # CSV lines, quoted as the output's cells are (csvout.csv_cell)
        # written a slice at a time: a failed chunk of millions of records costs one slice
        rows = iter(rows)
        while True:
            lines = [f"{csv_cell(str(a))},{csv_cell(str(b))}\n" for a, b in itertools.islice(rows, _LINES_AT_ONCE)]
            if not lines:
                return
            bad.write("".join(lines))

    out.write((",".join(source.output_header) + "\n").encode())
    bad_rows([source.error_header])
    ok = rows_bad = failed = skipped = 0
    failed_chunks = []
    reasons = Counter()  # kind of reason (reason_kind) -> bad records, for the line of a job with none good
    examples = {}  # kind -> its first reason as written
    first = 0  # records of the input before the current chunk
    lost = None  # why the row numbers from here on are unknown (CSV only)

    def fail(index, reason, rows):
        nonlocal failed, first
        failed_chunks.append({"chunk": index, "where": source.where(index), "reason": reason, "rows": rows})
        if rows is None or lost:
            bad_rows([(source.where(index), f"chunk {index} failed: {reason}")])
        else:
            bad_rows((name, f"chunk {index} failed: {reason}") for name in source.names(index, first, rows))
            first += rows
        failed += rows or 0

    for index, r in enumerate(outcomes):
        if r is None:
            n = _count(source, index)
            if n is None:
                lost = lost or f"chunk {index} ({source.where(index)}) could not be counted"
            else:
                skipped += n
                first += n
            continue
        if isinstance(r, ChunkFailure):
            n = r.rows if r.rows is not None else _count(source, index)
            fail(index, r.reason, n)
            if n is None and source.kind == "csv":
                lost = lost or f"chunk {index} ({source.where(index)}) could not be counted"
            continue
        n = len(r)
        if lost and source.kind == "csv":
            fail(index, f"not written: the row numbers are unknown after {lost}", n)
            continue
        good = r.labels >= 0  # (n,)
        names = source.names(index, first, n)
        idx = np.flatnonzero(good)  # (n_ok,)
        out.write(source.output_lines(names, idx, r.labels[idx], r.confidence[idx], r.notes))
        bad_rows((names[i], r.errors[i]) for i in sorted(r.errors))
        _tally(reasons, examples, r.errors.values())
        ok += len(idx)
        rows_bad += len(r.errors)
        first += n
    counts = {"rows_in": ok + rows_bad + failed, "rows_ok": ok, "rows_bad": rows_bad, "rows_failed": failed,
              "rows_skipped": skipped, "failed_chunks": failed_chunks}
    top = reasons.most_common(1)
    if not ok and top:  # the reason a job predicted nothing (failure_line)
        counts["top_reason"] = {"reason": examples[top[0][0]], "records": top[0][1]}
    return counts


_KIND_RE = re.compile(r"'.*'|-?[0-9][0-9.e+-]*")
MAX_REASON_KINDS = 1000  # kinds tallied at most (reasons quoting every value could be many)


def reason_kind(reason):
    """A reason without its values, so that reasons of one kind are counted together:
    "non-numeric value 'abc' in pixel12" -> "non-numeric value # in pixel#"."""
    return _KIND_RE.sub("#", reason)


def _tally(reasons, examples, found):
    for reason in found:
        kind = reason_kind(reason)
        if kind in reasons or len(reasons) < MAX_REASON_KINDS:
            reasons[kind] += 1
            examples.setdefault(kind, reason)


def final_state(counts, cancelled=False):
    """From assemble's counts: PARTIAL (a chunk failed as a whole), CANCELLED, FAILURE (no
    record predicted: all bad, or none at all; see failure_line) or SUCCESS."""
    if counts["rows_ok"] == 0 and not (cancelled or counts["rows_skipped"]):
        return "FAILURE"
    if counts["failed_chunks"]:
        return "PARTIAL"
    return "CANCELLED" if cancelled or counts["rows_skipped"] else "SUCCESS"


def failure_line(counts):
    """One line on why a job ended PARTIAL or FAILURE: the failed chunks (which, how many
    rows, why), or for a job without a single prediction, its most common reason."""
    fc = counts["failed_chunks"]
    nothing = "no predictions: " if not counts.get("rows_ok") else ""
    if not fc:
        top = counts.get("top_reason")
        if not counts.get("rows_in") or not top:
            return f"{nothing}the input holds no records"
        also = "" if top["records"] == counts["rows_bad"] else " (the most common reason)"
        return (f"{nothing}all {counts['rows_bad']} records are bad; {top['records']} of them: "
                f"{top['reason']}{also}")
    rows = sum(f["rows"] or 0 for f in fc)
    which = ", ".join(str(f["chunk"]) for f in fc[:5]) + (" ..." if len(fc) > 5 else "")
    return (f"{nothing}{len(fc)} chunk(s) failed ({which}), {rows} records not predicted: "
            f"{fc[0]['reason']}")


def run(source, model, out_ref, on_chunk=None):
    """Predict every chunk of a source in this process and assemble -> counts.

    A chunk that raises becomes a ChunkFailure (its records are listed as failed); the
    other chunks go on. on_chunk(index) is called after each chunk."""
    def outcomes():
        for index in range(len(source.chunks)):
            try:
                outcome = predict_chunk(source, index, model)
            except Exception as e:  # contained: this chunk's records are reported as failed
                outcome = ChunkFailure(describe(e))
            if on_chunk:
                on_chunk(index)
            yield outcome

    return assemble(source, outcomes(), out_ref)

"""Bulk prediction in three steps, shared by the queue and the in-process path.

    plan(input, chunk_rows)          -> Plan: the input split into chunks (byte ranges of
                                        a CSV, or slices of an image folder's sorted list)
    predict_chunk(plan, i, model)    -> ChunkResult of chunk i (bad records as data)
    assemble(plan, results, out)     -> output file in input order, errors file, counts

Outputs: for a CSV, a Kaggle submission `ImageId,Label` (ImageId = 1-based data row);
for an image folder, `path,label,confidence` (path relative to the folder). Bad records
go to `<out without .csv>.errors.csv` with columns `row,reason` or `path,reason`.
"""
import csv
import io
import json
from dataclasses import asdict, dataclass

import numpy as np

from model import data, storage
from model.errors import ConfigError, DataError


@dataclass
class Plan:
    """How one input is split; JSON-able through to_dict/from_dict."""

    kind: str  # "csv" or "images"
    input: str  # path or URL of the CSV file or image folder
    chunks: list  # csv: [[start, end] byte ranges]; images: [[lo, hi] slices of paths]
    labeled: bool = False  # csv only: the file has a label column (it is ignored)
    data_start: int = 0  # csv only
    size: int = 0  # csv only
    paths: list = None  # images only: sorted relative paths

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**d)

    def layout(self):
        return data.CsvLayout(self.input, self.labeled, self.data_start, self.size)


def plan(input_ref, chunk_rows, chunk_images=None):
    """Split a Kaggle CSV into chunks of about chunk_rows rows, or an image folder into
    chunks of chunk_images files (default chunk_rows): decoding an image costs far more
    than parsing a row, so folders take smaller chunks to spread over the workers."""
    input_ref = str(input_ref)
    if int(chunk_rows) < 1:  # a negative step would plan no chunk at all for a folder
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if not storage.exists(input_ref):
        raise DataError(input_ref, "no such file or folder")
    if storage.isdir(input_ref):
        paths = data.list_images(input_ref)
        step = int(chunk_images or chunk_rows)
        if step < 1:
            raise ConfigError(f"chunk_images must be >= 1, got {step}")
        chunks = [[lo, min(lo + step, len(paths))] for lo in range(0, len(paths), step)]
        return Plan("images", input_ref, chunks, paths=paths)
    layout = data.read_csv_layout(input_ref)
    chunks = [list(r) for r in data.plan_csv(layout, chunk_rows)]
    return Plan("csv", input_ref, chunks, layout.labeled, layout.data_start, layout.size)


@dataclass
class ChunkResult:
    """Predictions of one chunk, in input order."""

    labels: np.ndarray  # (n,) int16, -1 for bad records
    confidence: np.ndarray  # (n,) float32, 0 for bad records
    errors: dict  # record index within the chunk -> reason

    def __len__(self):
        return len(self.labels)

    def to_bytes(self):
        buf = io.BytesIO()
        errors = json.dumps({str(k): v for k, v in self.errors.items()})
        np.savez(buf, labels=self.labels, confidence=self.confidence, errors=np.array(errors))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, raw):
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            errors = {int(k): v for k, v in json.loads(str(z["errors"])).items()}
            return cls(z["labels"], z["confidence"], errors)


def read_chunk(p, index):
    """The records of chunk `index` of plan p -> data.Block."""
    lo, hi = p.chunks[index]
    if p.kind == "csv":
        return data.read_csv_range(p.layout(), lo, hi)
    return data.read_images(p.input, p.paths[lo:hi])


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
    return ChunkResult(labels, confidence, dict(block.errors))


def predict_chunk(p, index, model):
    """Read and predict chunk `index` of plan p -> ChunkResult."""
    return predict_block(read_chunk(p, index), model)


def chunk_length(p, index):
    """Records in chunk `index` without parsing them (line count of a CSV byte range)."""
    lo, hi = p.chunks[index]
    if p.kind == "images":
        return hi - lo
    raw = storage.read_bytes(p.input, lo, hi)
    return raw.count(b"\n") + (1 if raw and not raw.endswith(b"\n") else 0)


def errors_ref(out_ref):
    """Where the errors of an output go: <out without .csv>.errors.csv."""
    out_ref = str(out_ref)
    stem = out_ref[:-4] if out_ref.lower().endswith(".csv") else out_ref
    return stem + ".errors.csv"


def assemble(p, results, out_ref):
    """Write the output of plan p from its chunk results (an iterable, in chunk order).

    A None result is a chunk that never ran (a cancelled job): its records are counted in
    rows_skipped and the records after it keep their row numbers. Returns counts
    {"rows_in", "rows_ok", "rows_bad", "rows_skipped", "output", "errors"}, where
    rows_in = rows_ok + rows_bad and "errors" is the errors file, or None when every
    record was good (a stale errors file is then removed).
    """
    out = io.StringIO()
    bad = io.StringIO()
    bad_writer = csv.writer(bad, lineterminator="\n")
    if p.kind == "csv":
        out.write("ImageId,Label\n")
        bad_writer.writerow(["row", "reason"])
    else:
        out.write("path,label,confidence\n")
        bad_writer.writerow(["path", "reason"])
    rows_in = rows_bad = skipped = 0
    out_writer = csv.writer(out, lineterminator="\n")
    for index, r in enumerate(results):
        if r is None:
            skipped += chunk_length(p, index)
            continue
        n = len(r)
        ok = r.labels >= 0  # (n,)
        if p.kind == "csv":
            first = rows_in + skipped + 1  # ImageId of the chunk's first record
            ids = np.arange(first, first + n)[ok]
            lines = "\n".join(f"{i},{lab}" for i, lab in zip(ids.tolist(), r.labels[ok].tolist()))
            out.write(lines + ("\n" if lines else ""))
            for i in sorted(r.errors):
                bad_writer.writerow([first + i, r.errors[i]])
        else:
            lo = p.chunks[index][0]
            for i in np.flatnonzero(ok).tolist():
                out_writer.writerow([p.paths[lo + i], int(r.labels[i]), f"{r.confidence[i]:.4f}"])
            for i in sorted(r.errors):
                bad_writer.writerow([p.paths[lo + i], r.errors[i]])
        rows_in += n
        rows_bad += len(r.errors)
    storage.write_text(out_ref, out.getvalue())
    err_ref = errors_ref(out_ref)
    if rows_bad:
        storage.write_text(err_ref, bad.getvalue())
    else:
        storage.remove(err_ref)
        err_ref = None
    return {"rows_in": rows_in, "rows_ok": rows_in - rows_bad, "rows_bad": rows_bad,
            "rows_skipped": skipped, "output": str(out_ref), "errors": err_ref}

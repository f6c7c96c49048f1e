"""The CSV input source (see model.data.sources): chunks are byte ranges of whole lines."""
import numpy as np

from model.data import csvdialect, csvfile
from model.data.csvout import submission_lines
from model.errors import ConfigError


def check_step(name, value):
    """value as an int; ConfigError unless it is >= 1."""
    if int(value) < 1:  # a negative step would plan no chunk at all for a folder
        raise ConfigError(f"{name} must be >= 1, got {value}")
    return int(value)


class CsvSource:
    """A Kaggle CSV (`pixel0..pixel783`, or `label,pixel0..pixel783`) in byte ranges of
    whole lines; record names are 1-based data rows (a test file's ImageId)."""

    kind = "csv"
    output_header = ("ImageId", "Label")
    error_header = ("row", "reason")

    def __init__(self, input, chunks, labeled, data_start, size, dialect=None, unpacked_from=None):
        self.input, self.chunks = str(input), [list(c) for c in chunks]
        self.layout = csvfile.CsvLayout(self.input, bool(labeled), int(data_start), int(size),
                                     csvdialect.Dialect.from_dict(dialect))
        self.unpacked_from = unpacked_from  # the compressed file (or zip member) input was unpacked from

    @classmethod
    def plan(cls, ref, chunk_rows, chunk_images=None, training=False, unpacked_from=None):
        layout = csvfile.read_csv_layout(ref, training)
        chunks = csvfile.plan_csv(layout, check_step("chunk_rows", chunk_rows))
        return cls(ref, chunks, layout.labeled, layout.data_start, layout.size, layout.dialect.to_dict(),
                   unpacked_from)

    def to_dict(self):
        return {"kind": self.kind, "input": self.input, "chunks": self.chunks,
                "labeled": self.layout.labeled, "data_start": self.layout.data_start,
                "size": self.layout.size, "dialect": self.layout.dialect.to_dict(),
                "unpacked_from": self.unpacked_from}

    def notes(self):
        """How the input was read, a phrase each ("index column '' ignored", "unpacked from
        a.zip::test.csv"): the output's manifest says them."""
        out = [f"unpacked from {self.unpacked_from}"] if self.unpacked_from else []
        return out + self.layout.dialect.notes()

    def read(self, index, labels=False):
        """Chunk `index` -> Block; labels=True checks and returns a training file's labels."""
        lo, hi = self.chunks[index]
        return csvfile.read_csv_range(self.layout, lo, hi, labels=labels)

    def length(self, index):
        lo, hi = self.chunks[index]
        return csvfile.count_lines(self.input, lo, hi, self.layout.dialect, len(self.layout.columns))

    def names(self, index, first, n):
        """ImageIds of chunk `index`, whose first record is the input's record `first` (0-based)."""
        return range(first + 1, first + 1 + n)

    def where(self, index):
        lo, hi = self.chunks[index]
        return f"bytes {lo}-{hi}"

    def progress(self, index):
        """(done, total) once chunk `index` is read: bytes of the file."""
        return self.chunks[index][1], self.layout.size

    def output_lines(self, names, good, labels, confidence, notes):
        """Output lines "ImageId,Label" (bytes) of a chunk's good records: names is the
        chunk's range of ImageIds, good (k,) the indices of its good records, labels (k,)
        their digits; confidence and notes are not written for a CSV."""
        ids = np.arange(names.start, names.stop, dtype=np.int64)[good]  # (k,)
        return submission_lines(ids, labels)


"""The image input sources (see model.data.sources): a folder of image files, a zip of them,
each in slices of its sorted file list."""
from model import storage
from model.data import imagefolder, imagepack, imagezip
from model.data.csvout import SPECIAL_RE, confidence_texts, csv_cell
from model.data.csvsource import check_step


class ImageFolderSource:
    """A folder of image files in slices of its sorted file list; record names are paths
    relative to the folder ("/"-separated, see imagefolder.display_name). For training, the
    files of sub-folders 0..9 carry their folder's digit and the others are `unplaced`."""

    kind = "images"
    output_header = ("path", "label", "confidence", "preprocessing")
    error_header = ("path", "reason")

    def __init__(self, input, chunks, paths, labels=None, unplaced=(), pack=None):
        self.input, self.chunks, self.paths = str(input), [list(c) for c in chunks], list(paths)
        self.labels = None if labels is None else list(labels)
        self.unplaced = [tuple(u) for u in unplaced]  # [(path, reason)] left out of training
        self.pack = None if pack is None else [list(e) for e in pack]  # [offset, length, error] per path

    @classmethod
    def plan(cls, ref, chunk_rows, chunk_images=None, training=False):
        """The folder's files in sorted order, in slices of chunk_images; a packed folder
        (model.data.imagepack: what a client uploads) is planned from its index."""
        step = check_step("chunk_images", chunk_images or chunk_rows)
        labels, unplaced, pack, listed = None, [], None, None
        if imagepack.is_packed(ref):
            entries = {e[0]: e[1:] for e in imagepack.read_index(ref)}
            listed = sorted(entries)
        if training:
            paths, labels, unplaced = imagefolder.list_training_images(ref, listed)
        else:
            paths = imagefolder.list_images(ref) if listed is None else listed
        if listed is not None:
            pack = [entries[p] for p in paths]
        chunks = [[lo, min(lo + step, len(paths))] for lo in range(0, len(paths), step)]
        return cls(ref, chunks, paths, labels, unplaced, pack)

    def to_dict(self):
        return {"kind": self.kind, "input": self.input, "chunks": self.chunks, "paths": self.paths,
                "labels": self.labels, "unplaced": self.unplaced, "pack": self.pack}

    def read(self, index, labels=False):
        lo, hi = self.chunks[index]
        fetch = None if self.pack is None else (  # one range request for the chunk, not one per file
            lambda wanted: imagepack.read_entries(self.input, [[self.paths[lo + i]] + self.pack[lo + i]
                                                               for i in wanted]))
        sizes = None if self.pack is None else [e[1] for e in self.pack[lo:hi]]
        return imagefolder.read_images(self.input, self.paths[lo:hi],
                                self.labels[lo:hi] if labels and self.labels is not None else None, fetch, sizes)

    def length(self, index):
        lo, hi = self.chunks[index]
        return hi - lo

    def names(self, index, first, n):
        lo = self.chunks[index][0]
        return imagefolder.display_names(self.paths[lo:lo + n])

    def where(self, index):
        lo, hi = self.chunks[index]
        return f"files {lo + 1}-{hi}"

    def locate(self, name):
        """A record's name (names() or unplaced) -> where the file is, for an error."""
        return storage.join(self.input, name)

    def progress(self, index):
        return self.chunks[index][1], len(self.paths)

    def notes(self):
        return []

    def output_lines(self, names, good, labels, confidence, notes):
        """Output lines "path,label,confidence,preprocessing" (bytes; preprocessing says what
        was done to the image, empty for an MNIST-style 28x28 image) of a chunk's good
        records: names are the chunk's paths, good (k,) the indices of its good records,
        labels and confidence (k,) theirs, notes {index in chunk: note}."""
        rows = zip(good.tolist(), labels.tolist(), confidence_texts(confidence))
        if notes or SPECIAL_RE.search("".join(names)):  # a cell to quote, or notes: cell by cell
            cell = csv_cell
            lines = [f"{cell(names[i])},{lab},{c},{cell(notes[i]) if i in notes else ''}\n"
                     for i, lab, c in rows]
        else:  # MNIST-style files with plain names (nearly always): no cell needs a look
            lines = [f"{names[i]},{lab},{c},\n" for i, lab, c in rows]
        return "".join(lines).encode("utf-8")


class ImageZipSource(ImageFolderSource):
    """A zip of image files read as an image folder (model.data.imagezip): slices of its sorted
    member list; record names are `archive.zip::path/in/zip.png`. For training, the members
    of digit sub-folders 0..9 carry their digit (under one common top folder, if all are)."""

    kind = "imagezip"

    def __init__(self, input, chunks, paths, labels=None, unplaced=(), sizes=None):
        super().__init__(input, chunks, paths, labels, unplaced)
        self.sizes = None if sizes is None else list(sizes)

    @classmethod
    def plan(cls, ref, chunk_rows, chunk_images=None, training=False):
        step = check_step("chunk_images", chunk_images or chunk_rows)
        paths, sizes = imagezip.list_members(ref)
        labels, unplaced = None, []
        if training:
            top = {p.split("/", 1)[0] for p in paths}
            lead = top.pop() + "/" if len(top) == 1 and all("/" in p for p in paths) and \
                paths[0].split("/", 1)[0] not in tuple("0123456789") else ""
            size_of = dict(zip(paths, sizes))
            rels, labels, unplaced = imagefolder.list_training_images(ref, [p[len(lead):] for p in paths])
            paths = [lead + r for r in rels]
            unplaced = [(lead + p, reason) for p, reason in unplaced]
            sizes = [size_of[p] for p in paths]
        chunks = [[lo, min(lo + step, len(paths))] for lo in range(0, len(paths), step)]
        return cls(ref, chunks, paths, labels, unplaced, sizes)

    def to_dict(self):
        d = super().to_dict()
        del d["pack"]
        d["sizes"] = self.sizes
        return d

    def read(self, index, labels=False):
        lo, hi = self.chunks[index]
        names = self.paths[lo:hi]
        return imagefolder.read_images(self.input, names,
                                self.labels[lo:hi] if labels and self.labels is not None else None,
                                lambda wanted: imagezip.read_members(self.input, [names[i] for i in wanted]),
                                None if self.sizes is None else self.sizes[lo:hi])

    def names(self, index, first, n):
        lo = self.chunks[index][0]
        return imagefolder.display_names([imagezip.record_name(self.input, p) for p in self.paths[lo:lo + n]])

    def locate(self, name):
        return name if "::" in name else imagezip.record_name(self.input, name)


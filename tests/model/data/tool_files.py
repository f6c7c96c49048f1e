"""The same digit images written as pandas, R, numpy, Excel and Kaggle write them, for the
tests of every reader and of the command line. Each writer uses the tool itself where it is
installed (pandas, numpy, csv, gzip, bz2, lzma, zipfile) and builds R's and Excel's by hand."""
import bz2
import csv
import gzip
import io
import lzma
import zipfile

import numpy as np
import pandas as pd

PIXELS = [f"pixel{i}" for i in range(784)]


def _frame(x):
    return pd.DataFrame(np.asarray(x, np.int64), columns=PIXELS)


def _text(df, **kw):
    return df.to_csv(**kw).encode()


def plain(x):
    return _text(_frame(x), index=False)


def with_blank_lines(x, every=100):
    """An empty line after every `every`-th row, a CRLF one now and then, spaces once."""
    lines = plain(x).split(b"\n")
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i and i % every == 0 and line:
            out.append(b"" if i % (3 * every) else b"  \r")
    return b"\n".join(out)


def r_write_csv(x, crlf=False):
    """R's write.csv(df): every name quoted, row names "1".."N" quoted, values bare."""
    nl = "\r\n" if crlf else "\n"
    head = ",".join(['""'] + [f'"{c}"' for c in PIXELS])
    rows = [",".join([f'"{i + 1}"'] + [str(v) for v in r]) for i, r in enumerate(np.asarray(x).tolist())]
    return (nl.join([head] + rows) + nl).encode()


def trailing_comma(x):
    lines = plain(x).split(b"\n")
    return b"\n".join(line + b"," if line else line for line in lines)


def savetxt(x, fmt=None):
    buf = io.BytesIO()
    kw = {"fmt": fmt} if fmt else {}
    np.savetxt(buf, np.asarray(x, np.float64), delimiter=",", header=",".join(PIXELS), **kw)
    return buf.getvalue()


def excel_bom_crlf_ctrl_z(x):
    """Excel-style UTF-8 with a BOM and CRLF lines, and a DOS end-of-file Ctrl-Z."""
    return b"\xef\xbb\xbf" + plain(x).replace(b"\n", b"\r\n") + b"\x1a"


WRITERS = {  # name -> function of the images (n, 784) -> the file's bytes
    "plain": plain,
    "pandas index": lambda x: _text(_frame(x)),
    "pandas Unnamed: 0": lambda x: _text(_frame(x).reset_index().rename(columns={"index": "Unnamed: 0"}),
                                         index=False),
    "id column": lambda x: _text(_frame(x).set_axis(pd.RangeIndex(1, len(x) + 1, name="id")), index=True),
    "R write.csv": r_write_csv,
    "R write.csv CRLF": lambda x: r_write_csv(x, crlf=True),
    "QUOTE_ALL": lambda x: _text(_frame(x), index=False, quoting=csv.QUOTE_ALL),
    "semicolon": lambda x: _text(_frame(x), index=False, sep=";"),
    "semicolon decimal comma": lambda x: _text(_frame(x).astype(float), index=False, sep=";", decimal=","),
    "tab": lambda x: _text(_frame(x), index=False, sep="\t"),
    "trailing comma": trailing_comma,
    "integral floats": lambda x: _text(_frame(x).astype(float), index=False),
    "scientific floats": lambda x: _text(_frame(x).astype(float), index=False, float_format="%.2e"),
    "np.savetxt": savetxt,
    "np.savetxt %d": lambda x: savetxt(x, "%d"),
    "blank lines": with_blank_lines,
    "Excel BOM CRLF Ctrl-Z": excel_bom_crlf_ctrl_z,
    "pandas index QUOTE_ALL semicolon trailing": lambda x: trailing_comma_sep(
        _text(_frame(x), quoting=csv.QUOTE_ALL, sep=";"), b";"),
}


def trailing_comma_sep(raw, sep):
    return b"\n".join(line + sep if line else line for line in raw.split(b"\n"))


def zipped(members):
    """{name: bytes} -> the bytes of a zip holding them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    return buf.getvalue()


COMPRESSORS = {  # name -> (file suffix, function of plain bytes -> compressed bytes)
    "gzip": (".csv.gz", gzip.compress),
    "bzip2": (".csv.bz2", bz2.compress),
    "xz": (".csv.xz", lzma.compress),
    "zip": (".zip", lambda raw: zipped({"test.csv": raw})),
    "gzip named .csv": (".csv", gzip.compress),
    "zip named .csv": (".csv", lambda raw: zipped({"digits/test.csv": raw})),
}


def train_csv(x, labels):
    df = _frame(x)
    df.insert(0, "label", np.asarray(labels, np.int64))
    return _text(df, index=False)


def kaggle_zip(train_x, train_y, test_x):
    """Kaggle's digit-recognizer.zip: train.csv, test.csv and sample_submission.csv."""
    sub = "ImageId,Label\n" + "".join(f"{i + 1},0\n" for i in range(len(test_x)))
    return zipped({"train.csv": train_csv(train_x, train_y), "test.csv": plain(test_x),
                   "sample_submission.csv": sub.encode()})

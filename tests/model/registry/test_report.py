"""Training report: a self-contained HTML page with SVG charts and the confusion matrix."""
import math

import numpy as np

from model.registry.report import render_report, write_report
from model.train import EpochMetrics


def history(n):
    return [dict(epoch=e, train_loss=0.5 / e, train_accuracy=0.9 + e / 1000, val_loss=0.6 / e,
                 val_accuracy=0.89 + e / 1000, lr=0.05, seconds=2.0) for e in range(1, n + 1)]


def confusion():
    cm = np.eye(10, dtype=np.int64) * 50
    cm[4, 9] = 7
    return cm


def test_report_has_charts_matrix_and_numbers(tmp_path):
    ref = tmp_path / "sub" / "report.html"
    write_report(str(ref), title="digits v3", history=history(5), confusion=confusion(),
                 metrics={"val_accuracy": 0.9871, "val_loss": 0.0456},
                 meta={"recipe": "default", "created_at": "2025-01-02T03:04:05+00:00",
                       "model_version": "abcdef0123456789",
                       "promotion": {"promoted": False, "reason": "worse than production"}})
    page = ref.read_text()
    assert page.count("<svg") == 2 and "<polyline" in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    for text in ("digits v3", "98.71%", "0.0456", "default", "2025-01-02T03:04:05+00:00",
                 "abcdef0123456789", "not promoted: worse than production", "train", "validation",
                 "<b>4</b> read as <b>9</b> (7×)", "87.7%"):  # recall of class 4: 50 / 57
        assert text in page, text
    assert page.count("<td style=") == 100  # the 10x10 heat map
    assert [f.name for f in ref.parent.iterdir()] == ["report.html"]  # written atomically


def test_one_epoch_nan_and_no_confusion():
    h = history(1)
    h[0]["val_loss"] = float("nan")
    page = render_report(title="t", history=h, confusion=None, metrics={"val_accuracy": float("nan")},
                         meta={})
    assert page.count("<svg") == 2 and "<circle" in page and "nan" not in page.lower().replace("none", "")
    assert "n/a" in page and "Confusion" not in page


def test_nan_gap_splits_line_and_all_nan_says_no_data():
    h = history(6)
    h[2]["val_loss"] = math.nan
    page = render_report(title="t", history=h, confusion=confusion(), metrics={}, meta={})
    assert page.count("<polyline") == 5  # val loss split in two, three other full lines
    for row in h:
        row["train_loss"] = row["val_loss"] = None
    assert "no data" in render_report(title="t", history=h, confusion=None, metrics={}, meta={})


def test_accepts_epoch_metrics_and_empty_history():
    h = [EpochMetrics(epoch=1, train_loss=0.3, train_accuracy=0.91, val_loss=0.35, val_accuracy=0.9,
                      lr=0.1, seconds=1.0)]
    assert "90.00%" in render_report(title="t", history=h, confusion=None, metrics={}, meta={})
    page = render_report(title="t", history=[], confusion=None, metrics={}, meta={})
    assert "<svg" not in page and "n/a" in page

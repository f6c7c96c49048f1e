"""The one progress bar (worker.cli.progress.JobBar): throttling, the ETA rule, the final
frame (pure logic, no stack)."""
from tasks import times
from worker.cli.progress import JobBar


def train_progress(epoch, epochs, batch, batches, val=None):
    return {"epoch": epoch, "epochs": epochs, "batch": batch, "batches": batches, "loss": 0.5 / batch,
            "val_accuracy": val}


def test_bar_redraws_rarely_but_always_at_epoch_ends(monkeypatch):
    bar = JobBar("train", every=3600)
    redraws = []
    for epoch in (1, 2):
        for b in range(1, 501):
            bar.update("train", train_progress(epoch, 2, b, 500, None if epoch == 1 else 0.97))
            if bar.bar is not None and not redraws:
                monkeypatch.setattr(bar.bar, "refresh", lambda *a, **k: redraws.append((bar.bar.n, bar.bar.postfix)))
    bar.update("train", train_progress(2, 2, 500, 500, 0.9775), force=True)  # the last epoch's own score
    bar.close()
    # after the first frame, only the last batch of each epoch (every=3600 s) and the forced one
    assert [n for n, _ in redraws] == [500, 1000, 1000]
    assert redraws[-1][1].startswith("epoch 2/2 batch 500/500") and "val_accuracy 0.9775" in redraws[-1][1]
    assert bar.bar.unit == "batches"


def test_no_bar_before_a_total_and_no_absurd_eta():
    bar = JobBar("job")
    bar.update("train", {})  # queued: nothing known yet
    assert bar.bar is None
    bar.update("predict", {"chunks_done": 1, "chunks": 5000})
    assert "eta" not in bar.bar.postfix and bar.bar.unit == "chunks"
    bar.close()


def test_eta_rule():
    assert times.eta_seconds(1, 6000, 3.0) is None  # one batch in: an ETA would say 5 hours
    assert times.eta_seconds(120, 6000, 0.5) is None  # too short a measure
    assert times.eta_seconds(600, 6000, 10.0) == 90.0
    assert times.eta_seconds(3100, 6000, 10.0, done_at_start=3000) == 290.0  # a resumed run counts its own rate
    assert [times.format_seconds(x) for x in (3.14, 21, 185, 7300, 604800, 90000)] == \
        ["3.1s", "21s", "3m05s", "2h01m", "7d", "1d01h"]

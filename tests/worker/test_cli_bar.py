"""The training progress bar's redraw throttling (pure logic, no stack)."""
from worker.cli.progress import train_bar


def test_train_bar_redraws_rarely_but_always_at_epoch_ends(monkeypatch):
    bar, update = train_bar("train", every=3600)
    redraws = []
    monkeypatch.setattr(bar, "refresh", lambda *a, **k: redraws.append((bar.n, bar.postfix)))
    for epoch in (1, 2):
        for b in range(1, 501):
            update(epoch, 2, b, 500, 0.5 / b, None if epoch == 1 else 0.97)
    bar.close()
    # the first batch, then only the last batch of each epoch (every=3600 s)
    assert [n for n, _ in redraws] == [1, 500, 1000]
    assert "epoch 2/2" in redraws[-1][1] and "val_acc 0.9700" in redraws[-1][1]

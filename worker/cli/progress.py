"""Progress bars on stderr: one for prediction jobs (chunks), one for training (batches)."""
import sys
import time

from tqdm import tqdm

from worker.cli.common import eprint


def predict_wait(job, label):
    bar = tqdm(total=None, unit="chunk", desc=label, file=sys.stderr, dynamic_ncols=True)
    t0 = time.time()

    def on_progress(st):
        p = st.get("progress", {})
        bar.total = p.get("chunks") or 0
        bar.n = p.get("chunks_done", 0)
        bar.set_postfix_str(st["state"].lower())
        bar.refresh()

    try:
        manifest = job.wait(on_progress=on_progress)
    finally:
        bar.close()
    rows = manifest.get("rows_in", 0)
    secs = time.time() - t0
    eprint(f"{rows} rows in {secs:.2f}s ({rows / max(secs, 1e-9):,.0f} rows/s)")
    return manifest


def train_bar(label, every=0.1):
    """A progress bar and its update(...); the bar is redrawn at most every `every` seconds
    and at the end of each epoch (a redraw costs as much as a few training batches)."""
    bar = tqdm(total=None, unit="batch", desc=label, file=sys.stderr, dynamic_ncols=True)
    last = {"t": float("-inf")}

    def update(epoch, epochs, batch_no, batches, loss, val_acc):
        now = time.monotonic()
        if now - last["t"] < every and batch_no != batches:
            return
        last["t"] = now
        bar.total = epochs * batches
        bar.n = (epoch - 1) * batches + batch_no
        post = f"epoch {epoch}/{epochs} loss {loss:.4f}"
        if val_acc is not None:
            post += f" val_acc {val_acc:.4f}"
        bar.set_postfix_str(post, refresh=False)
        bar.refresh()

    return bar, update


def train_wait(job, label):
    """Wait for a training job with a progress bar (epoch, loss, val_accuracy) -> manifest."""
    bar, update = train_bar(label)

    def on_progress(st):
        p = st.get("progress") or {}
        if "epoch" in p:
            update(p["epoch"], p["epochs"], p["batch"], p["batches"], p["loss"], p.get("val_accuracy"))

    try:
        return job.wait(on_progress=on_progress)
    finally:
        bar.close()

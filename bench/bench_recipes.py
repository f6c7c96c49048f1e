"""What each ingredient adds: validation accuracy and training time of recipe variants.

    python bench/bench_recipes.py [--only NAME ...] [--seeds 0 1 2] [--list]

Trains each variant on the 60,000 MNIST training images (../shared/data/mnist-train.npz,
or DIGITS_SHARED_DATA) in this process, one after the other, with one BLAS thread (the
trainer's default), and scores it on the trainer's fixed 10% validation split (6,000
images; one standard error of an accuracy near 0.99 is about 0.0013 there). Prints a
Markdown table: final validation accuracy (the mean over --seeds, with the range), training
seconds (Trainer setup + all epochs, wall clock, the median over seeds) and the median
seconds per epoch.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.common import SHARED, figures  # noqa: E402
from model.train import Trainer, make_config  # noqa: E402

AFFINE = dict(shift=2.0, rotate=10.0, scale=0.1)

# (name, what, recipe, overrides): the ingredients one at a time, then variations of the default
VARIANTS = [
    ("faithful", "the original: plain SGD, lr 0.1, 10 epochs, fixed order", "faithful", {}),
    ("plain", "momentum 0.9, warm-up + cosine lr, reshuffling, 15 epochs (the previous default)", "plain", {}),
    ("plain-30", "the same for 30 epochs", "plain", dict(epochs=30)),
    ("affine-30", "+ random shifts (2 px), rotations (10 deg), scalings (10%), 30 epochs",
     "plain", dict(epochs=30, **AFFINE)),
    ("default", "elastic distortions (alpha 20, sigma 4) instead, 30 epochs: the new default", "default", {}),
    ("elastic-15", "elastic, 15 epochs", "default", dict(epochs=15)),
    ("elastic-45", "elastic, 45 epochs", "default", dict(epochs=45)),
    ("elastic+affine", "elastic and affine together, 30 epochs", "default", dict(AFFINE)),
    ("elastic+shift1", "elastic and shifts of 1 px, 30 epochs", "default", dict(shift=1.0)),
    ("alpha-14", "elastic alpha 14", "default", dict(elastic_alpha=14.0)),
    ("alpha-28", "elastic alpha 28", "default", dict(elastic_alpha=28.0)),
    ("alpha-34", "elastic alpha 34 (Simard's)", "default", dict(elastic_alpha=34.0)),
    ("sigma-3", "elastic sigma 3", "default", dict(elastic_sigma=3.0)),
    ("sigma-5", "elastic sigma 5", "default", dict(elastic_sigma=5.0)),
    ("clean-2", "elastic, the last 2 epochs undistorted", "default", dict(clean_epochs=2)),
    ("smooth-0.1", "elastic + label smoothing 0.1", "default", dict(label_smoothing=0.1)),
    ("lr-0.1", "elastic, peak lr 0.1", "default", dict(lr=0.1)),
    ("batch-128", "elastic, batch 128, peak lr 0.1", "default", dict(batch_size=128, lr=0.1)),
    ("adam", "elastic, Adam lr 0.001", "default", dict(optimizer="adam", lr=0.001)),
]


def load():
    with np.load(os.path.join(SHARED, "mnist-train.npz")) as z:
        x, y = z["x"], z["y"]
    return x.reshape(len(x), -1), y


def run(recipe, overrides, seed, X, y):
    """Train one variant -> (final val accuracy, training seconds, median seconds per epoch, epochs)."""
    t0 = time.perf_counter()
    trainer = Trainer(make_config(recipe, seed=seed, **overrides), X, y)
    history = trainer.run()
    seconds = time.perf_counter() - t0
    return history[-1].val_accuracy, seconds, statistics.median(m.seconds for m in history), len(history)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these variants")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (default 0)")
    p.add_argument("--list", action="store_true", help="list the variants and exit")
    a = p.parse_args()
    variants = [v for v in VARIANTS if not a.only or v[0] in a.only]
    if a.list or not variants:
        for name, what, recipe, over in VARIANTS:
            print(f"{name:16} {what}  [{recipe} {over}]")
        return
    X, y = load()
    print(f"{len(y)} images, validation split {make_config().val_fraction:.0%}, seeds {a.seeds}, one BLAS thread")
    print("| variant | what | epochs | validation accuracy | training s | s per epoch |")
    print("|---|---|---|---|---|---|")
    found = {}
    for name, what, recipe, over in variants:
        runs = [run(recipe, over, seed, X, y) for seed in a.seeds]
        accs = [r[0] for r in runs]
        acc = f"{statistics.mean(accs):.4f}"
        if len(accs) > 1:
            acc += f" ({min(accs):.4f}–{max(accs):.4f})"
        secs = statistics.median(r[1] for r in runs)
        per_epoch = statistics.median(r[2] for r in runs)
        print(f"| `{name}` | {what} | {runs[0][3]} | {acc} | {secs:.1f} | {per_epoch:.2f} |", flush=True)
        found[name] = {"accuracy": statistics.mean(accs), "seconds": secs}
    figures("recipes", variants=found)


if __name__ == "__main__":
    main()

"""Training speed: the faithful recipe on the full 60,000 MNIST images, ours vs the seed style.

    python bench/bench_train.py [--data DIR] [--epochs 10]

All run in this process, one after the other, on the same train.csv and the same
validation split: the seed style (numpy's default BLAS threads), then ours with one BLAS
thread (the default) and with two. Prints load time, seconds per epoch (median),
validation accuracy, end-to-end wall-clock time (load, setup and every epoch) and the
ratios baseline / ours.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.common import parser, mnist_csv, seed_load, seed_train, timed  # noqa: E402
from model import data  # noqa: E402
from model.train import Trainer, make_config, split_indices  # noqa: E402


def main():
    p = parser(__doc__)
    p.add_argument("--epochs", type=int, default=10)
    a = p.parse_args()
    train_csv, _ = mnist_csv(a.data)
    config = make_config("faithful", epochs=a.epochs)  # for the validation split

    (X, y), seed_load_s = timed(seed_load, train_csv)
    tr, va = split_indices(len(y), config.val_fraction, config.val_seed)
    seed_epochs = []
    (_, seed_accs), seed_train_s = timed(seed_train, X, y, tr, va, epochs=a.epochs,
                                         on_epoch=lambda e, s, acc: seed_epochs.append(s))
    del X

    ds, our_load_s = timed(data.load_training, train_csv)
    ours = {}
    for threads in (1, 2):  # the default (1), and both cores like the baseline's BLAS
        config = make_config("faithful", epochs=a.epochs, blas_threads=threads)
        trainer, setup_s = timed(Trainer, config, ds.pixels, ds.labels)
        history, run_s = timed(trainer.run)
        ours[threads] = ([h.seconds for h in history], history[-1].val_accuracy, setup_s + run_s)

    # Seconds per epoch: the baseline's exclude its validation pass, ours include it.
    # Setup + train and end to end are wall-clock times: normalization, one-hot labels,
    # the pixel order, every epoch and every validation pass.
    print(f"faithful recipe, {len(y)} images ({len(tr)} train / {len(va)} validation), {a.epochs} epochs")
    print(f"{'':32}{'seed style':>12}{'ours, 1 BLAS thread':>22}{'ours, 2 BLAS threads':>22}")
    rows = [("load (s)", seed_load_s, our_load_s, our_load_s),
            ("seconds per epoch (median)", statistics.median(seed_epochs),
             statistics.median(ours[1][0]), statistics.median(ours[2][0])),
            ("setup + train (s)", seed_train_s, ours[1][2], ours[2][2]),
            ("end to end: load + train (s)", seed_load_s + seed_train_s,
             our_load_s + ours[1][2], our_load_s + ours[2][2])]
    for name, base, one, two in rows:
        print(f"{name:32}{base:12.3f}{one:12.3f} ({base / one:4.2f}x){two:12.3f} ({base / two:4.2f}x)")
    print(f"{'validation accuracy':32}{seed_accs[-1]:12.4f}{ours[1][1]:12.4f}{'':8}{ours[2][1]:12.4f}")


if __name__ == "__main__":
    main()

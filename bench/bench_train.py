"""Training speed: the faithful recipe on the full 60,000 MNIST images, ours vs the seed style.

    python bench/bench_train.py [--data DIR] [--epochs 10]

Both run in this process, one after the other, on the same train.csv and the same
validation split. Prints load time, seconds per epoch (median), validation accuracy,
end-to-end time (load + train) and the ratios baseline / ours.
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
    config = make_config("faithful", epochs=a.epochs)

    (X, y), seed_load_s = timed(seed_load, train_csv)
    tr, va = split_indices(len(y), config.val_fraction, config.val_seed)
    seed_epochs = []
    _, seed_accs = seed_train(X, y, tr, va, epochs=a.epochs,
                              on_epoch=lambda e, s, acc: seed_epochs.append(s))
    del X

    ds, our_load_s = timed(data.load_training, train_csv)
    trainer = Trainer(config, ds.pixels, ds.labels)
    history, _ = timed(trainer.run)
    our_epochs = [h.seconds for h in history]

    rows = [("load (s)", seed_load_s, our_load_s),
            ("seconds per epoch (median)", statistics.median(seed_epochs), statistics.median(our_epochs)),
            ("train (s)", sum(seed_epochs), sum(our_epochs)),
            ("end to end: load + train (s)", seed_load_s + sum(seed_epochs), our_load_s + sum(our_epochs))]
    print(f"faithful recipe, {len(y)} images ({len(tr)} train / {len(va)} validation), {a.epochs} epochs")
    print(f"{'':32}{'seed style':>12}{'ours':>10}{'ratio':>8}")
    for name, base, ours in rows:
        print(f"{name:32}{base:12.3f}{ours:10.3f}{base / ours:7.2f}x")
    print(f"{'validation accuracy':32}{seed_accs[-1]:12.4f}{history[-1].val_accuracy:10.4f}")


if __name__ == "__main__":
    main()

"""Training speed: the faithful recipe on the full 60,000 MNIST images, ours vs the seed style.

    python bench/bench_train.py [--data DIR] [--epochs 10]

All run in this process on the same train.csv and the same validation split: the seed
style (numpy's default BLAS threads), ours with one BLAS thread (the default) and ours with
two. Their epochs are interleaved (seed, ours 1, ours 2, seed, ...), so that each round of
the three meets the same machine: on a shared VM the speed drifts by tens of percent within
a minute. Every time is wall clock and every epoch includes its validation pass. Prints
load, setup, seconds per epoch (median), the per-epoch ratio (median over rounds), end to
end (load + setup + all epochs) and validation accuracy.
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.common import SeedStyle, figures, mnist_csv, parser, seed_load, timed  # noqa: E402
from model import sources  # noqa: E402
from model.train import Trainer, make_config, split_indices  # noqa: E402


def one_epoch(trainer):
    """Run one more epoch of trainer -> its validation accuracy."""
    done = []
    trainer.run(on_epoch=done.append, should_stop=lambda: bool(done))
    return done[0].val_accuracy


def main():
    p = parser(__doc__)
    p.add_argument("--epochs", type=int, default=10)
    a = p.parse_args()
    train_csv, _ = mnist_csv(a.data)
    config = make_config("faithful", epochs=a.epochs)

    (X, y), seed_load_s = timed(seed_load, train_csv)
    tr, va = split_indices(len(y), config.val_fraction, config.val_seed)
    ds, our_load_s = timed(sources.load_training, train_csv)
    names = ["seed style", "ours, 1 BLAS thread", "ours, 2 BLAS threads"]
    load = dict(zip(names, (seed_load_s, our_load_s, our_load_s)))
    seed, setup_s = timed(SeedStyle, X, y, tr, va)
    setup = {names[0]: setup_s}
    runners = {names[0]: seed.epoch}
    for name, threads in zip(names[1:], (1, 2)):
        trainer, setup[name] = timed(Trainer, make_config("faithful", epochs=a.epochs, blas_threads=threads),
                                     ds.pixels, ds.labels)
        runners[name] = lambda t=trainer: one_epoch(t)
    epochs = {name: [] for name in names}
    acc = {}
    for e in range(a.epochs):
        for name in names:
            t0 = time.perf_counter()
            acc[name] = runners[name]()
            epochs[name].append(time.perf_counter() - t0)
        print(f"epoch {e + 1}: " + ", ".join(f"{n} {epochs[n][-1]:.3f} s" for n in names), file=sys.stderr)

    print(f"faithful recipe, {len(y)} images ({len(tr)} train / {len(va)} validation), {a.epochs} epochs")
    print(f"{'':34}" + "".join(f"{n:>22}" for n in names))
    base = names[0]
    total = {n: load[n] + setup[n] + sum(epochs[n]) for n in names}
    for label, values in (("load (s)", load), ("setup (s)", setup),
                          ("seconds per epoch (median)", {n: statistics.median(epochs[n]) for n in names}),
                          ("end to end (s)", total)):
        cells = [f"{values[base]:22.3f}"]
        cells += [f"{values[n]:13.3f} ({values[base] / values[n]:4.2f}x)" for n in names[1:]]
        print(f"{label:34}" + "".join(cells))
    paired = [f"{statistics.median(b / o for b, o in zip(epochs[base], epochs[n])):21.2f}x" for n in names[1:]]
    print(f"{'per-epoch ratio (median of rounds)':34}{'':22}" + "".join(paired))
    print(f"{'validation accuracy':34}" + "".join(f"{acc[n]:22.4f}" for n in names))
    ratios = [statistics.median(b / o for b, o in zip(epochs[base], epochs[n])) for n in names[1:]]
    figures("train", epoch_ratio=ratios[0], epoch_ratio_2threads=ratios[1],
            seed_epoch_s=statistics.median(epochs[base]), ours_epoch_s=statistics.median(epochs[names[1]]),
            end_to_end_ratio=total[base] / total[names[1]], accuracy=acc[names[1]], seed_accuracy=acc[base])


if __name__ == "__main__":
    main()

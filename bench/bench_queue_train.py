"""The cost of the queue for training: a full faithful run (10 epochs, 60,000 images,
checkpoint every epoch) through an embedded stack vs the same training in-process.

    python bench/bench_queue_train.py [--data DIR] [--epochs 10] [--rounds 3]

In-process = load the CSV + train; queue = submit until the job's manifest is written
(load, train, progress publishing, a checkpoint every epoch, registration and report).
The two alternate for --rounds rounds (the stack stays up); the medians are compared.
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.common import figures, median, parser, mnist_csv  # noqa: E402


def main():
    p = parser(__doc__)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    train_csv, _ = mnist_csv(a.data)
    home = tempfile.mkdtemp(prefix="digits-bench-home-")
    os.environ.update(DIGITS_HOME=home, DIGITS_STORAGE=os.path.join(home, "storage"))
    os.environ.pop("DIGITS_BROKER_URL", None)
    from model.data import sources
    from model.train import Trainer, make_config
    from worker import settings
    from worker.app import configure
    from worker.client import submit_training
    from worker.stack.broker import broker_for
    config = make_config("faithful", epochs=a.epochs)

    def local():
        t0 = time.perf_counter()
        ds = sources.load_training(train_csv)
        trainer = Trainer(config, ds.pixels, ds.labels)
        trainer.run()
        return time.perf_counter() - t0, trainer.history[-1].val_accuracy

    s = settings.load()
    local_t, queue_t = [], []
    with broker_for(s, log=lambda *a: None) as url:  # an embedded stack, stopped afterwards
        app = configure(url)
        for r in range(a.rounds):
            secs, local_acc = local()
            local_t.append(secs)
            t0 = time.perf_counter()
            manifest = submit_training(train_csv, "bench", config, app=app, settings=s).wait()
            queue_t.append(time.perf_counter() - t0)
            print(f"round {r + 1}: in-process {secs:.2f} s, through the queue {queue_t[-1]:.2f} s", flush=True)
    local_s, queue_s = median(local_t), median(queue_t)
    print(f"faithful recipe, {a.epochs} epochs on {train_csv}")
    print(f"medians of {a.rounds} rounds:")
    print(f"in-process (load + train):                 {local_s:.2f} s  val_accuracy {local_acc:.4f}")
    print(f"through the queue (checkpoint every epoch): {queue_s:.2f} s  val_accuracy "
          f"{manifest['val_accuracy']:.4f}")
    print(f"queue overhead: {100 * (queue_s / local_s - 1):+.1f}%  (target <= +10%)")
    figures("queue_train", local_s=local_s, queue_s=queue_s, overhead=queue_s / local_s - 1)


if __name__ == "__main__":
    main()

"""`digits train`: a training job through the queue or in this process."""
import time

from tqdm import tqdm

from model import checkpoint, storage
from model.data import sources
from model.errors import UsageError
from worker.cli.common import eprint, queue_app
from worker.cli.progress import JobBar, train_wait


def _training_overrides(a):
    return dict(epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, seed=a.seed,
                val_fraction=a.val_fraction, optimizer=a.optimizer, blas_threads=a.blas_threads)


def cmd_train(a, s):
    from model.train import make_config
    from worker.cli.parser import local_only_options
    local_only_options(a)
    if a.local and not a.out and not a.name:
        raise UsageError("--local needs --out MODEL (a file) or --name NAME (the registry)")
    config = make_config(a.recipe, **_training_overrides(a))
    if a.local:
        return _train_local(a, s, config)
    from worker.client import submit_training
    from worker.client.submission import check_training
    name = a.name or "digits"
    if not a.job_id:
        check_training(a.data)  # a missing or unlabeled file fails here, before any stack starts
    with queue_app(s, keep_alive=a.no_wait) as app:
        job = submit_training(a.data, name, config, app=app, settings=s, skip_bad=a.skip_bad,
                              checkpoint_every=a.checkpoint_every, job_id=a.job_id)
        if a.no_wait:
            print(job.id)
            return 0
        eprint(f"training job {job.id} (model {name!r}, recipe {config.recipe})")
        manifest = train_wait(job, name)
    return report_train(manifest, a.out)


def report_train(manifest, out):
    """Print what a training job ended with (version, val_accuracy, promoted or not and why,
    report) -> exit code: 1 for a cancelled run."""
    from tasks.records import TrainJob
    from tasks.states import JobState
    for line in TrainJob.result_lines(manifest):
        print(line)
    if manifest["state"] == JobState.CANCELLED:
        return 1
    if out:
        storage.write_bytes(out, storage.read_bytes(manifest["model"]))
        print(f"model file copied to {out}")
    return 0


def _train_local(a, s, config):
    from model.train import Trainer
    from tasks.records import TrainJob
    eprint(f"reading {a.data}")
    ds = sources.load_training(a.data, skip_bad=a.skip_bad)
    if ds.skipped:
        eprint(f"skipped {len(ds.skipped)} bad records, first: {ds.skipped[0][0]}: {ds.skipped[0][1]}")
    trainer = Trainer(config, ds.pixels, ds.labels)
    bar = JobBar(f"train {config.recipe}")
    last = {}

    def on_batch(i):
        last.update(epoch=i.epoch, epochs=i.epochs, batch=i.batch, batches=i.batches, loss=i.loss,
                    val_accuracy=trainer.history[-1].val_accuracy if trainer.history else None)
        bar.update("train", last)

    def on_epoch(m):
        bar.update("train", dict(last, val_accuracy=m.val_accuracy), force=True)  # the epoch's own score
        tqdm.write(f"epoch {m.epoch}/{config.epochs}: loss {m.train_loss:.4f} val_loss {m.val_loss:.4f} "
                      f"val_accuracy {m.val_accuracy:.4f} ({m.seconds:.2f}s)")

    t0 = time.perf_counter()
    try:
        trainer.run(on_batch=on_batch, on_epoch=on_epoch)
    finally:
        bar.close()
    model = checkpoint.trained_model(trainer, ds.fingerprint, str(a.data))
    print(f"trained {len(ds.labels)} images ({len(trainer.y_val)} held out) in "
          f"{time.perf_counter() - t0:.1f}s: val_accuracy {trainer.history[-1].val_accuracy:.4f}")
    if a.out:
        checkpoint.save_model(model, a.out)
        print(f"model written to {a.out} (version {model.version})")
    if a.name:
        from model.registry.versions import Registry
        meta = Registry(s.storage).register_trained(a.name, model, trainer, job_id=None,
                                                    tolerance=s.promote_tolerance)
        print(f"registered {a.name} version {meta['version']}; {TrainJob.promotion_text(meta['promotion'])}")
    return 0

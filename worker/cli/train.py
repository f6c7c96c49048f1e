"""`digits train`: a training job through the queue or in this process."""
import time

from model import checkpoint, sources, storage
from model.errors import DigitsError
from worker.cli.common import eprint, queue_app
from worker.cli.progress import train_bar, train_wait


def _training_overrides(a):
    return dict(epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, seed=a.seed,
                val_fraction=a.val_fraction, optimizer=a.optimizer, blas_threads=a.blas_threads)


def cmd_train(a, s):
    from model.train import make_config
    config = make_config(a.recipe, **_training_overrides(a))
    if a.local:
        return _train_local(a, s, config)
    from worker.client import submit_training
    name = a.name or "digits"
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
    if manifest["state"] == "CANCELLED":
        print(f"training cancelled after {manifest['epochs_done']} epochs; checkpoint kept at "
              f"{manifest['checkpoint']}")
        return 1
    promo = manifest.get("promotion") or {}
    print(f"model {manifest['name']} version {manifest['version']}: val_accuracy "
          f"{manifest['val_accuracy']:.4f}; {promo.get('reason', '')}")
    print(f"report: {manifest.get('report')}")
    if out:
        storage.write_bytes(out, storage.read_bytes(manifest["model"]))
        print(f"model file copied to {out}")
    return 0


def _train_local(a, s, config):
    from model.train import Trainer
    if not a.out and not a.name:
        raise DigitsError("--local needs --out MODEL (a file) or --name NAME (the registry)")
    eprint(f"reading {a.data}")
    ds = sources.load_training(a.data, skip_bad=a.skip_bad)
    if ds.skipped:
        eprint(f"skipped {len(ds.skipped)} bad records, first: {ds.skipped[0][0]}: {ds.skipped[0][1]}")
    trainer = Trainer(config, ds.pixels, ds.labels)
    bar, update = train_bar(f"train {config.recipe}")
    last = {"val": None}

    def on_epoch(m):
        last["val"] = m.val_accuracy
        bar.write(f"epoch {m.epoch}/{config.epochs}: loss {m.train_loss:.4f} val_loss {m.val_loss:.4f} "
                  f"val_accuracy {m.val_accuracy:.4f} ({m.seconds:.2f}s)")

    t0 = time.perf_counter()
    trainer.run(on_batch=lambda i: update(i.epoch, i.epochs, i.batch, i.batches, i.loss, last["val"]),
                on_epoch=on_epoch)
    bar.close()
    model = checkpoint.trained_model(trainer, ds.fingerprint, str(a.data))
    print(f"trained {len(ds.labels)} images ({len(trainer.y_val)} held out) in "
          f"{time.perf_counter() - t0:.1f}s: val_accuracy {trainer.history[-1].val_accuracy:.4f}")
    if a.out:
        checkpoint.save_model(model, a.out)
        print(f"model written to {a.out} (version {model.version})")
    if a.name:
        from model.registry import Registry
        meta = Registry(s.storage).register_trained(a.name, model, trainer, job_id=None,
                                                    tolerance=s.promote_tolerance)
        print(f"registered {a.name} version {meta['version']}; {meta['promotion']['reason']}")
    return 0

"""The `digits` command line. Run `digits --help`, or `digits COMMAND --help`."""
import argparse
import json
import os
import signal
import sys
import time

from tqdm import tqdm

from model import __version__, batch, checkpoint, sources, storage
from model.errors import BrokerUnreachable, DigitsError
from worker import settings as settings_mod

EPILOG = """Every command reads its settings from DIGITS_* environment variables (see README).
With no DIGITS_BROKER_URL the commands use an embedded Redis and worker processes under
DIGITS_HOME (default ./.digits): started by `digits up`, or for one command's duration."""


def _eprint(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- helpers

def _app_if_running(s):
    """A configured Celery app when a broker is reachable without starting one, else None."""
    from worker import stack
    from worker.app import configure
    if s.broker_url:
        return configure(s.broker_url)
    running = stack.find_running(s)
    return configure(running["broker_url"]) if running else None


def _ensure_background_stack(s):
    """Start a detached `digits up --idle-exit` unless a stack is reachable (for --no-wait)."""
    from worker import stack
    stack.start_background(s, log=_eprint)


class _Queue:
    """Context: a Celery app bound to a reachable broker (starting a stack if needed)."""

    def __init__(self, s, keep_alive=False):
        self.s, self.keep_alive = s, keep_alive

    def __enter__(self):
        from worker import stack
        from worker.app import configure
        if self.keep_alive:
            _ensure_background_stack(self.s)
        self._cm = stack.broker_for(self.s, log=_eprint)
        return configure(self._cm.__enter__())

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def _print_json(obj):
    print(json.dumps(obj, indent=1, sort_keys=True, default=str))


def _predict_bar(job, label):
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
    _eprint(f"{rows} rows in {secs:.2f}s ({rows / max(secs, 1e-9):,.0f} rows/s)")
    return manifest


def _train_bar(label, every=0.1):
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


def _train_wait(job, label):
    """Wait for a training job with a progress bar (epoch, loss, val_accuracy) -> manifest."""
    bar, update = _train_bar(label)

    def on_progress(st):
        p = st.get("progress") or {}
        if "epoch" in p:
            update(p["epoch"], p["epochs"], p["batch"], p["batches"], p["loss"], p.get("val_accuracy"))

    try:
        return job.wait(on_progress=on_progress)
    finally:
        bar.close()


def _report_predict(manifest):
    """Print what a prediction wrote -> exit code (worker.exitcodes): 1 for PARTIAL or CANCELLED."""
    from worker import exitcodes
    print(f"wrote {manifest['rows_ok']} predictions to {manifest['output']}")
    if manifest.get("rows_bad"):
        print(f"{manifest['rows_bad']} bad records skipped; reasons in {manifest['errors']}")
    state = manifest.get("state") or batch.final_state(manifest)
    if state == "PARTIAL":
        where = f"job {manifest['job_id']}: " if manifest.get("job_id") else ""
        _eprint(f"digits: partial: {where}{batch.failure_line(manifest)}; listed in {manifest['errors']}")
    elif state == "CANCELLED":
        print(f"job was cancelled: {manifest.get('rows_skipped', 0)} records not predicted")
    return exitcodes.for_state(state)


def _training_overrides(a):
    return dict(epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, seed=a.seed,
                val_fraction=a.val_fraction, optimizer=a.optimizer, blas_threads=a.blas_threads)


# ----------------------------------------------------------------------------- commands

def cmd_train(a, s):
    from model.train import make_config
    config = make_config(a.recipe, **_training_overrides(a))
    if a.local:
        return _train_local(a, s, config)
    from worker.client import submit_training
    name = a.name or "digits"
    with _Queue(s, keep_alive=a.no_wait) as app:
        job = submit_training(a.data, name, config, app=app, settings=s, skip_bad=a.skip_bad,
                              checkpoint_every=a.checkpoint_every, job_id=a.job_id)
        if a.no_wait:
            print(job.id)
            return 0
        _eprint(f"training job {job.id} (model {name!r}, recipe {config.recipe})")
        manifest = _train_wait(job, name)
    return _report_train(manifest, a.out)


def _report_train(manifest, out):
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
    _eprint(f"reading {a.data}")
    ds = sources.load_training(a.data, skip_bad=a.skip_bad)
    if ds.skipped:
        _eprint(f"skipped {len(ds.skipped)} bad records, first: {ds.skipped[0][0]}: {ds.skipped[0][1]}")
    trainer = Trainer(config, ds.pixels, ds.labels)
    bar, update = _train_bar(f"train {config.recipe}")
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


def cmd_predict(a, s):
    if a.local:
        return _predict_local(a, s)
    from worker.client import check_prediction, submit_prediction
    # fail fast before any stack starts; a resubmitted job id reuses its own record
    checked = None if a.job_id else check_prediction(s, a.input, a.model, a.out)
    with _Queue(s, keep_alive=a.no_wait) as app:
        job = submit_prediction(a.input, a.model, a.out, app=app, settings=s, job_id=a.job_id,
                                chunk_rows=a.chunk_rows, checked=checked)
        if a.no_wait:
            print(job.id)
            return 0
        _eprint(f"prediction job {job.id}")
        manifest = _predict_bar(job, "predict")
    return _report_predict(manifest)


def _predict_local(a, s):
    from model.registry import Registry
    from worker.client import check_paths
    check_paths(a.input, a.out)
    path, _ = Registry(s.storage).resolve(a.model)
    model = checkpoint.load_model(path)
    source = sources.open_source(a.input, a.chunk_rows or s.chunk_rows, a.chunk_rows or s.chunk_images)
    bar = tqdm(total=len(source.chunks), unit="chunk", desc="predict", file=sys.stderr)
    counts = batch.run(source, model, a.out, on_chunk=lambda i: bar.update(1))
    bar.close()
    return _report_predict(counts)


def _job_status(s, job_id, apps):
    """status() of a job, calm about the broker: storage first (it has the final state of
    an ended job and its progress); an unfinished job's state from the broker when one
    answers; BrokerDown when none does. apps caches the Celery app per broker URL."""
    from worker import stack
    from worker.app import configure
    from worker.client import FINAL_STATES, status
    from worker.outage import BrokerDown
    st = status(None, s, job_id)
    if st["state"] in FINAL_STATES:
        return st
    url = stack.live_broker(s)
    if url is None:
        raise BrokerDown(f"no broker answers at {s.broker_url or s.embedded_url}")
    if url not in apps:
        apps.clear()
        apps[url] = configure(url)
    return status(apps[url], s, job_id)


def cmd_status(a, s):
    from worker import exitcodes
    from worker.client import status
    from worker.outage import BrokerDown
    try:
        st = _job_status(s, a.job, {})
    except BrokerDown:
        # without a broker nothing runs the job: say so instead of its last known state
        st = status(None, s, a.job)
        st.update(last_state=st["state"], state="STALLED", broker=s.broker_url or s.embedded_url,
                  broker_reachable=False)
    if a.json:
        _print_json(st)
        return exitcodes.for_state(st["state"])
    print(f"job {st['job_id']} ({st['kind']}): {st['state']}")
    if st["state"] == "STALLED":
        print(f"broker {st['broker']} is unreachable: nothing runs the job now; it goes on when its "
              f"stack is back (its queued work is kept)")
    p = st.get("progress") or {}
    if st["kind"] == "predict":
        print(f"chunks {p.get('chunks_done', 0)}/{p.get('chunks', 0)}")
    elif "epoch" in p:
        print(f"epoch {p['epoch']}/{p['epochs']} batch {p['batch']}/{p['batches']} loss {p['loss']:.4f} "
              f"val_accuracy {p.get('val_accuracy')}" + ("" if st["state"] == "STALLED" else
                                                         f" eta {p.get('eta_seconds')}s"))
    for key in ("rows_in", "rows_ok", "rows_bad", "version", "val_accuracy", "error"):
        if st.get(key) is not None:
            print(f"{key}: {st[key]}")
    print(f"output: {st.get('output')}")
    return exitcodes.for_state(st["state"])


def cmd_watch(a, s):
    from worker import exitcodes
    from worker.client import FINAL_STATES
    from worker.outage import Outage
    outage = Outage(s.broker_url or s.embedded_url, s.broker_outage, _eprint)
    apps = {}
    bar = tqdm(total=None, file=sys.stderr, dynamic_ncols=True, desc=a.job)
    st = None
    try:
        while True:
            st = outage.call(lambda: _job_status(s, a.job, apps)) or st
            p = (st or {}).get("progress") or {}
            if st is None:
                pass
            elif st["kind"] == "predict":
                bar.total, bar.n = p.get("chunks"), p.get("chunks_done", 0)
            elif "epoch" in p:
                from tasks.train import progress_text
                bar.total, bar.n = p["epochs"] * p["batches"], (p["epoch"] - 1) * p["batches"] + p["batch"]
                bar.set_postfix_str(progress_text(p))
            if st is not None:
                bar.set_description(f"{a.job} {st['state'] if outage.since is None else 'reconnecting'}")
                bar.refresh()
                if st["state"] in FINAL_STATES:
                    break
            time.sleep(a.interval)
    finally:
        bar.close()
    print(f"job {a.job}: {st['state']}")
    return exitcodes.for_state(st["state"])


def cmd_cancel(a, s):
    from tasks import jobs
    jobs.read_job(s.storage, a.job)
    if jobs.read_manifest(s.storage, a.job):
        print(f"job {a.job} has already ended")
        return 0
    jobs.request_cancel(s.storage, a.job)
    print(f"cancel requested for job {a.job}: remaining work is skipped, finished work kept")
    return 0


def cmd_models(a, s):
    from model.registry import Registry
    versions = Registry(s.storage).versions(a.name)
    if a.json:
        _print_json(versions)
        return 0
    if not versions:
        print(f"no models registered under {s.storage}")
        return 0
    for v in versions:
        acc = (v.get("metrics") or {}).get("val_accuracy")
        acc = f"{acc:.4f}" if isinstance(acc, float) else "-"
        aliases = ",".join(v.get("aliases", [])) or "-"
        print(f"{v['name']}:{v['version']}  val_accuracy {acc}  aliases {aliases}  "
              f"recipe {v.get('recipe')}  created {v.get('created_at')}\n    report {v.get('report')}")
    return 0


def cmd_promote(a, s):
    from model.registry import Registry
    Registry(s.storage).promote(a.name, a.version, reason="promoted by hand with `digits promote`")
    print(f"{a.name}:{a.version} is now production")
    return 0


def cmd_schedule(a, s):
    from worker.schedule import describe
    info = describe(s)
    if a.json:
        _print_json(info)
    elif not info["enabled"]:
        print("no retraining scheduled (set DIGITS_RETRAIN_CRON and DIGITS_RETRAIN_DATA)")
    else:
        print(f"retrain {info['model']} from {info['data']} (recipe {info['recipe']}) on "
              f"cron '{info['cron']}'; next run {info['next_run']}")
    return 0


def cmd_up(a, s):
    from worker.stack import Stack, find_running
    running = find_running(s)
    if running:
        raise DigitsError(f"a stack is already running under {s.home} (pid {running['pid']})")
    stack = Stack(s, flower=not a.no_flower, scheduler=True, log=_eprint)
    stop = {"now": False}

    def handler(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    _eprint(f"starting Redis, workers{'' if a.no_flower else ', Flower'} and the scheduler under {s.home} ...")
    stack.start()
    print(f"ready: broker {stack.url}", flush=True)
    if stack.flower_url:
        print(f"Flower: {stack.flower_url}  (user {stack.flower_user}, password {stack.flower_password})",
              flush=True)
    print("press Ctrl-C to stop", flush=True)
    idle_since = time.time()
    busy = _busy_check(stack) if a.idle_exit else None
    try:
        while not stop["now"]:
            time.sleep(0.5)
            stack.supervise()  # restarts what died, runs the watchdog
            if a.idle_exit:
                if busy():
                    idle_since = time.time()
                elif time.time() - idle_since > a.idle_exit:
                    _eprint(f"idle for {a.idle_exit}s: stopping")
                    break
    finally:
        _eprint("stopping (workers first, then the scheduler and Flower, then Redis) ...")
        stack.stop()
    _eprint("stopped")
    return 0


def _busy_check(stack):
    """busy() -> True while any of the stack's queues holds messages or any live worker
    holds a task (running, reserved, or waiting for its countdown). A message taken by a
    worker that died counts once the watchdog has put it back in its queue; while Redis
    or the workers restart, the stack counts as busy."""
    from worker import supervise
    from worker.app import configure
    from worker.watchdog import BROKER_ERRORS, held_task_ids
    r = supervise.quick_redis(stack.sock)
    app = configure(stack.url)
    queues = [q.name for q in app.conf.task_queues]

    def busy():
        try:
            if any(r.llen(q) for q in queues):
                return True
            held = held_task_ids(app, timeout=1, workers=len(stack.worker_names()))
        except BROKER_ERRORS:
            return True
        return held is None or bool(held)

    return busy


def cmd_demo(a, s):
    from model.samples import write_sample
    from worker.stack import reachable
    from worker.client import submit_prediction, submit_training
    from worker.app import configure
    out = os.path.abspath(a.out or str(s.home / "demo"))
    _eprint(f"writing the bundled sample (2,500 labeled + 500 held-out MNIST digits) to {out}")
    paths = write_sample(out)
    with reachable(s, log=_eprint, flower=True) as info:
        app = configure(info["broker_url"])
        if info.get("flower_url"):
            print(f"Flower (while this runs): {info['flower_url']}  user {info['flower_user']} "
                  f"password {info['flower_password']}", flush=True)
        from model.train import make_config
        config = make_config("default", epochs=a.epochs)
        job = submit_training(paths["train"], "demo", config, app=app, settings=s)
        _eprint(f"1/3 training model 'demo' on {paths['train']} through the queue (job {job.id})")
        trained = _train_wait(job, "train")
        model_ref = f"demo:{trained['version']}"
        print(f"trained demo:{trained['version']}, val_accuracy {trained['val_accuracy']:.4f}; "
              f"report {trained.get('report')}")
        _eprint(f"2/3 predicting {paths['test']} through the queue")
        csv_out = os.path.join(out, "submission.csv")
        m1 = _predict_bar(submit_prediction(paths["test"], model_ref, csv_out, app=app, settings=s,
                                            chunk_rows=100), "predict csv")
        _eprint(f"3/3 predicting the image folder {paths['images_test']} through the queue")
        img_out = os.path.join(out, "images-predictions.csv")
        m2 = _predict_bar(submit_prediction(paths["images_test"], model_ref, img_out, app=app, settings=s,
                                            chunk_rows=100), "predict images")
    import pandas as pd
    sub = pd.read_csv(csv_out)
    truth = pd.read_csv(paths["test_labels"])
    merged = truth.merge(sub, on="ImageId", suffixes=("_true", "_pred"))
    acc = float((merged["Label_true"] == merged["Label_pred"]).mean())
    imgs = pd.read_csv(img_out)
    agree = float((imgs["label"].to_numpy() == sub["Label"].to_numpy()).mean())
    print(f"accuracy on the {len(merged)} held-out sample digits: {acc:.4f}")
    print(f"image-folder predictions agree with the CSV predictions on {agree:.2%} of images")
    print(f"outputs: {csv_out} ({m1['rows_ok']} rows), {img_out} ({m2['rows_ok']} rows)")
    return 0


def cmd_worker(a, s):
    from worker import services
    import socket
    name = a.name or f"celery@{socket.gethostname()}"
    argv = services.worker_argv(a.queues, a.concurrency, name, a.max_tasks_per_child, a.loglevel)
    os.execv(argv[0], argv)


def cmd_scheduler(a, s):
    from worker import services
    argv = services.scheduler_argv(a.schedule_file or (s.home / "beat-schedule"), a.loglevel)
    s.home.mkdir(parents=True, exist_ok=True)
    os.execv(argv[0], argv)


def cmd_flower(a, s):
    from worker import services
    if not (s.flower_user and s.flower_password):
        raise DigitsError("set DIGITS_FLOWER_USER and DIGITS_FLOWER_PASSWORD: Flower runs behind basic auth")
    db = a.db or os.environ.get("FLOWER_DB") or str(s.home / "flower.db")
    os.makedirs(os.path.dirname(os.path.abspath(db)), exist_ok=True)
    argv = services.flower_argv(s.flower_address, s.flower_port, db)
    os.execve(argv[0], argv, dict(os.environ, **services.flower_env(s.flower_user, s.flower_password)))


# ----------------------------------------------------------------------------- parser

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser():
    p = argparse.ArgumentParser(
        prog="digits", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A NumPy digit recognizer (784-128-10) that trains and bulk-predicts as Celery jobs.")
    p.add_argument("--version", action="version", version=f"digits {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, func, help_, **kw):
        sp = sub.add_parser(name, help=help_, description=help_, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
        sp.set_defaults(func=func)
        return sp

    sp = add("demo", cmd_demo, "Train on the bundled sample and bulk-predict it through the queue.")
    sp.add_argument("--out", help="folder for the sample and the outputs (default DIGITS_HOME/demo)")
    sp.add_argument("--epochs", type=int, default=15, help="training epochs (default 15)")

    sp = add("up", cmd_up, "Run the embedded stack (Redis, workers, scheduler, Flower) until Ctrl-C.")
    sp.add_argument("--no-flower", action="store_true", help="do not start Flower")
    sp.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                    help="stop by itself after the queues are idle this long")

    sp = add("train", cmd_train, "Train a model on a Kaggle training CSV or a folder of digit sub-folders.")
    sp.add_argument("data", help="train.csv (label,pixel0..pixel783) or a folder with sub-folders 0..9")
    sp.add_argument("--out", help="write the model file here (a path or storage URL)")
    sp.add_argument("--name", help="register the model under this name (queue default: digits)")
    sp.add_argument("--recipe", default="default", choices=["default", "faithful"],
                    help="faithful: the original 10 epochs, lr 0.1, batch 64, plain SGD; "
                         "default: momentum with cosine decay (better)")
    sp.add_argument("--epochs", type=int)
    sp.add_argument("--lr", type=float, help="learning rate")
    sp.add_argument("--batch-size", type=int)
    sp.add_argument("--seed", type=int)
    sp.add_argument("--optimizer", choices=["sgd", "momentum", "adam"])
    sp.add_argument("--val-fraction", type=float, help="share held out for validation (default 0.1)")
    sp.add_argument("--blas-threads", type=_positive_int,
                    help="BLAS threads (default 1; 2 is faster on an otherwise idle 2-core machine, "
                         "much slower when the cores are busy; results differ slightly by count)")
    sp.add_argument("--skip-bad", action="store_true", help="train on the good records and list the bad ones")
    sp.add_argument("--checkpoint-every", type=int, default=1, metavar="EPOCHS",
                    help="queue jobs: checkpoint every N epochs (default 1)")
    sp.add_argument("--local", action="store_true", help="train in this process instead of on the queue")
    sp.add_argument("--no-wait", action="store_true", help="print the job id and return")
    sp.add_argument("--job-id", help="use this job id (resubmitting an id resumes that job)")

    sp = add("predict", cmd_predict, "Predict a Kaggle test CSV or a folder of 28x28 images.")
    sp.add_argument("input", help="test.csv (pixel0..pixel783, or a labeled file) or an image folder")
    sp.add_argument("--model", required=True,
                    help="a model file, or NAME (production, else latest), NAME@ALIAS, NAME:VERSION")
    sp.add_argument("--out", required=True,
                    help="output CSV: ImageId,Label for a CSV; path,label,confidence for images")
    sp.add_argument("--local", action="store_true", help="predict in this process instead of on the queue")
    sp.add_argument("--no-wait", action="store_true", help="print the job id and return")
    sp.add_argument("--chunk-rows", type=_positive_int, help="records per chunk (default DIGITS_CHUNK_ROWS for a CSV, DIGITS_CHUNK_IMAGES for images)")
    sp.add_argument("--job-id", help="use this job id (resubmitting an id never duplicates rows)")

    sp = add("status", cmd_status, "Show a job's state, progress, counts and output.")
    sp.add_argument("job")
    sp.add_argument("--json", action="store_true", help="one JSON object")

    sp = add("watch", cmd_watch, "Follow a job's progress live until it ends.")
    sp.add_argument("job")
    sp.add_argument("--interval", type=float, default=0.5, help="seconds between updates")

    sp = add("cancel", cmd_cancel, "Stop a job: remaining chunks or batches are skipped, finished work kept.")
    sp.add_argument("job")

    sp = add("models", cmd_models, "List registered model versions, their metrics, aliases and reports.")
    sp.add_argument("name", nargs="?")
    sp.add_argument("--json", action="store_true")

    sp = add("promote", cmd_promote, "Make a model version the production one.")
    sp.add_argument("name")
    sp.add_argument("version")

    sp = add("schedule", cmd_schedule, "Show the retraining schedule and its next run.")
    sp.add_argument("--json", action="store_true")

    sp = add("worker", cmd_worker, "Run a Celery worker (for clusters; `digits up` starts its own).")
    sp.add_argument("--queues", default="predict,train", help="predict, train, or predict,train")
    sp.add_argument("--concurrency", type=int, default=os.cpu_count() or 2, help="worker processes")
    sp.add_argument("--max-tasks-per-child", type=int, help="recycle a process after N tasks")
    sp.add_argument("--name", help="node name (default celery@HOSTNAME, what the healthcheck pings)")
    sp.add_argument("--loglevel", default="INFO")

    sp = add("scheduler", cmd_scheduler, "Run the retraining scheduler (Celery beat). Run exactly one.")
    sp.add_argument("--schedule-file", help="beat state file (default DIGITS_HOME/beat-schedule)")
    sp.add_argument("--loglevel", default="INFO")

    sp = add("flower", cmd_flower, "Run Flower with basic auth from DIGITS_FLOWER_USER/PASSWORD.")
    sp.add_argument("--db", help="Flower's state file (default DIGITS_HOME/flower.db)")
    return p


def main(argv=None):
    parser = build_parser()
    a = parser.parse_args(argv)
    if not getattr(a, "func", None):
        parser.print_help()
        return 2
    from worker import exitcodes
    from worker.watchdog import BROKER_ERRORS
    try:
        return a.func(a, settings_mod.load()) or 0
    except BrokerUnreachable as e:
        _eprint(f"digits: error: {e}")
        return exitcodes.BROKER
    except DigitsError as e:
        _eprint(f"digits: error: {e}")
        return exitcodes.FAILED
    except BROKER_ERRORS as e:  # the broker went away outside a waiting loop (say, mid-submission)
        s = settings_mod.load()
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        _eprint(f"digits: error: broker {s.broker_url or s.embedded_url} unreachable: {reason}")
        return exitcodes.BROKER
    except OSError as e:  # an unwritable --out, a full disk, ...: the user's to fix, in one line
        _eprint(f"digits: error: {e}")
        return 1
    except KeyboardInterrupt:
        _eprint("digits: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

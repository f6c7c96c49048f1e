"""`digits up`, `demo`, and the cluster services `worker`, `scheduler` and `flower`."""
import os
import signal
import time

from model.errors import DigitsError
from worker.cli.common import eprint
from worker.cli.progress import predict_wait, train_wait


def cmd_up(a, s):
    from worker.stack.embedded import Stack
    from worker.stack.broker import find_running
    running = find_running(s)
    if running:
        raise DigitsError(f"a stack is already running under {s.home} (pid {running['pid']})")
    stack = Stack(s, flower=not a.no_flower, scheduler=True, log=eprint)
    stop = {"now": False}

    def handler(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    eprint(f"starting Redis, workers{'' if a.no_flower else ', Flower'} and the scheduler under {s.home} ...")
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
                    eprint(f"idle for {a.idle_exit}s: stopping")
                    break
    finally:
        eprint("stopping (workers first, then the scheduler and Flower, then Redis) ...")
        stack.stop()
    eprint("stopped")
    return 0


def _busy_check(stack):
    """busy() -> True while any of the stack's queues holds messages or any live worker
    holds a task (running, reserved, or waiting for its countdown). A message taken by a
    worker that died counts once the watchdog has put it back in its queue; while Redis
    or the workers restart, the stack counts as busy."""
    from worker.stack import supervise
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
    from model.data.samples import write_sample
    from worker.stack.broker import reachable
    from worker.client import submit_prediction, submit_training
    from worker.app import configure
    out = os.path.abspath(a.out or str(s.home / "demo"))
    eprint(f"writing the bundled sample (2,500 labeled + 500 held-out MNIST digits) to {out}")
    paths = write_sample(out)
    with reachable(s, log=eprint, flower=True) as info:
        app = configure(info["broker_url"])
        if info.get("flower_url"):
            print(f"Flower (while this runs): {info['flower_url']}  user {info['flower_user']} "
                  f"password {info['flower_password']}", flush=True)
        from model.train import make_config
        config = make_config("default", epochs=a.epochs)
        job = submit_training(paths["train"], "demo", config, app=app, settings=s)
        eprint(f"1/3 training model 'demo' on {paths['train']} through the queue (job {job.id})")
        trained = train_wait(job, "train")
        model_ref = f"demo:{trained['version']}"
        print(f"trained demo:{trained['version']}, val_accuracy {trained['val_accuracy']:.4f}; "
              f"report {trained.get('report')}")
        eprint(f"2/3 predicting {paths['test']} through the queue")
        csv_out = os.path.join(out, "submission.csv")
        m1 = predict_wait(submit_prediction(paths["test"], model_ref, csv_out, app=app, settings=s,
                                            chunk_rows=100), "predict csv")
        eprint(f"3/3 predicting the image folder {paths['images_test']} through the queue")
        img_out = os.path.join(out, "images-predictions.csv")
        m2 = predict_wait(submit_prediction(paths["images_test"], model_ref, img_out, app=app, settings=s,
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
    name = a.name or services.node_name(a.queues)
    argv = services.worker_argv(a.queues, a.concurrency, name, a.max_tasks_per_child, a.loglevel)
    os.execv(argv[0], argv)


def cmd_scheduler(a, s):
    from worker import services
    argv = services.scheduler_argv(a.schedule_file or (s.home / "beat-schedule"), a.loglevel)
    s.home.mkdir(parents=True, exist_ok=True)
    os.execv(argv[0], argv)


def cmd_flower(a, s):
    """Flower in this process (as `celery -A worker.app flower` would run it), with a thread that
    has it look at the workers again until every queue has one (services.refresh_flower): in a
    cluster the workers may start after Flower."""
    import threading
    from celery.bin.celery import celery as celery_cli
    from worker import services
    if not (s.flower_user and s.flower_password):
        raise DigitsError("set DIGITS_FLOWER_USER and DIGITS_FLOWER_PASSWORD: Flower runs behind basic auth")
    db = a.db or os.environ.get("FLOWER_DB") or str(s.home / "flower.db")
    os.makedirs(os.path.dirname(os.path.abspath(db)), exist_ok=True)
    argv = services.flower_argv(s.flower_address, s.flower_port, db)
    os.environ.update(services.flower_env(s.flower_user, s.flower_password))
    host = s.flower_address if s.flower_address not in ("", "0.0.0.0", "::") else "127.0.0.1"
    threading.Thread(target=services.refresh_flower, name="flower-refresh", daemon=True,
                     args=(f"http://{host}:{s.flower_port}", s.flower_user, s.flower_password),
                     kwargs={"timeout": None, "every": 5.0}).start()
    return celery_cli.main(args=argv[3:], prog_name="celery", auto_envvar_prefix="CELERY")

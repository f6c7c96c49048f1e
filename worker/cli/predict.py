"""`digits predict`: bulk prediction through the queue or in this process."""
from worker.cli.common import eprint, queue_app


def cmd_predict(a, s):
    if a.local:
        return _predict_local(a, s)
    import gc
    gc.disable()  # no collection walks the ~100,000 objects NumPy and Celery import (~40 ms); see below
    from worker.client import check_prediction, submit_prediction
    # fail fast before any stack starts; a resubmitted job id reuses its own record
    checked = None if a.job_id else check_prediction(s, a.input, a.model, a.out)
    if not a.no_wait:  # imported now, not while the job runs: the workers have the cores then
        import importlib
        for name in ("model.batch", "worker.outage"):  # report_predict's, Job.wait's
            importlib.import_module(name)
        from worker.cli.progress import predict_wait
    with queue_app(s, keep_alive=a.no_wait) as app:
        job = submit_prediction(a.input, a.model, a.out, app=app, settings=s, job_id=a.job_id,
                                chunk_rows=a.chunk_rows, checked=checked)
        if a.no_wait:
            print(job.id)
            return 0
        eprint(f"prediction job {job.id}")
        gc.freeze()  # what the command holds by now is never garbage: no collection walks it during the job
        gc.enable()
        manifest = predict_wait(job, "predict")
    return report_predict(manifest)


def _predict_local(a, s):
    from model import batch, checkpoint, sources
    from worker.malloc import keep_freed_memory
    keep_freed_memory()  # as in a worker process: the parser's temporaries reused
    from model.registry import Registry
    from worker.cli.progress import JobBar
    from worker.client import check_paths
    check_paths(a.input, a.out)
    path, _ = Registry(s.storage).resolve(a.model)
    model = checkpoint.load_model(path)
    source = sources.open_source(a.input, a.chunk_rows or s.chunk_rows, a.chunk_rows or s.chunk_images)
    bar = JobBar("predict")
    done = {"n": 0}

    def on_chunk(i):
        done["n"] += 1
        bar.update("predict", {"chunks_done": done["n"], "chunks": len(source.chunks)})

    try:
        counts = batch.run(source, model, a.out, on_chunk=on_chunk)
    finally:
        bar.close()
    return report_predict(counts)


def report_predict(manifest):
    """Print what a prediction wrote -> exit code (worker.exitcodes): 1 for PARTIAL or CANCELLED."""
    from model import batch
    from worker import exitcodes
    print(f"wrote {manifest['rows_ok']} predictions to {manifest['output']}")
    if manifest.get("rows_bad"):
        print(f"{manifest['rows_bad']} bad records skipped; reasons in {manifest['errors']}")
    state = manifest.get("state") or batch.final_state(manifest)
    if state == "PARTIAL":
        where = f"job {manifest['job_id']}: " if manifest.get("job_id") else ""
        eprint(f"digits: partial: {where}{batch.failure_line(manifest)}; listed in {manifest['errors']}")
    elif state == "CANCELLED":
        print(f"job was cancelled: {manifest.get('rows_skipped', 0)} records not predicted")
    return exitcodes.for_state(state)

"""`digits predict`: bulk prediction through the queue or in this process."""
from worker.cli.common import eprint, queue_app


def cmd_predict(a, s):
    from worker.cli.parser import local_only_options
    local_only_options(a)
    if a.local:
        return _predict_local(a, s)
    import gc
    gc.disable()  # no collection walks the ~100,000 objects NumPy and Celery import (~40 ms); see below
    from worker.client.submission import check_prediction
    from worker.client import submit_prediction
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
    return report_predict(manifest, a.json)


def _predict_local(a, s):
    import tempfile
    from model import checkpoint
    from model.data import sources
    from worker.malloc import keep_freed_memory
    keep_freed_memory()  # as in a worker process: the parser's temporaries reused
    from model.registry.versions import Registry
    from worker.client.submission import check_paths
    check_paths(a.input, a.out)
    sources.check_input(a.input)  # before the model is loaded or anything decompressed
    path, _ = Registry(s.storage).resolve(a.model)
    model = checkpoint.load_model(path)
    with tempfile.TemporaryDirectory(prefix="digits-unpack-") as unpack_to:  # a compressed input's plain copy
        source = sources.open_source(a.input, a.chunk_rows or s.chunk_rows, a.chunk_rows or s.chunk_images,
                                     unpack_to=unpack_to)
        return _run_local(source, model, a)


def _run_local(source, model, a):
    from model import batch
    from worker.cli.progress import JobBar
    bar = JobBar("predict")
    done = {"n": 0}

    def on_chunk(i):
        done["n"] += 1
        bar.update("predict", {"chunks_done": done["n"], "chunks": len(source.chunks)})

    try:
        counts = batch.run(source, model, a.out, on_chunk=on_chunk)
    finally:
        bar.close()
    return report_predict(counts, a.json)


def report_predict(manifest, as_json=False):
    """Print what a prediction wrote (with as_json, one JSON object: the manifest with its
    state and, when it did not succeed, its error line) -> exit code (worker.exitcodes): 1
    for PARTIAL, CANCELLED, or FAILURE (not one record predicted)."""
    from model import batch
    from tasks.states import JobState
    from worker import exitcodes
    state = manifest.get("state") or batch.final_state(manifest)
    if as_json:
        import json
        error = manifest.get("error") or (batch.failure_line(manifest) if state in (JobState.PARTIAL, JobState.FAILURE) else None)
        print(json.dumps(dict(manifest, state=state, error=error, exit_code=exitcodes.for_state(state)),
                         default=str, sort_keys=True))
        return exitcodes.for_state(state)
    print(f"wrote {manifest['rows_ok']} predictions to {manifest['output']}")
    if manifest.get("read_as"):
        print(f"read as: {'; '.join(manifest['read_as'])}")
    if manifest.get("rows_bad"):
        print(f"{manifest['rows_bad']} bad records skipped; reasons in {manifest['errors']}")
    if state == JobState.FAILURE:
        where = f"job {manifest['job_id']}: " if manifest.get("job_id") else ""
        line = manifest.get("error") or f"{where}{batch.failure_line(manifest)}"
        listed = f"; listed in {manifest['errors']}" if manifest.get("errors") else ""
        eprint(f"digits: failed: {line}{listed}")
    elif state == JobState.PARTIAL:
        where = f"job {manifest['job_id']}: " if manifest.get("job_id") else ""
        eprint(f"digits: partial: {where}{batch.failure_line(manifest)}; listed in {manifest['errors']}")
    elif state == JobState.CANCELLED:
        print(f"job was cancelled: {manifest.get('rows_skipped', 0)} records not predicted")
    return exitcodes.for_state(state)

"""Faults caused for real inside a drill stack's pool processes (tests/tasks/faultstack.py).

This folder leads the drill stack's PYTHONPATH, so Python imports this module at the start
of each of its processes. With DIGITS_DRILL_FILE set, each pool process wraps
model.batch.predict_block: before predicting a chunk it reads that JSON file
({task id: action}) and, for its own task id, SIGKILLs itself ("kill", on every delivery:
what the kernel's OOM killer does to a chunk that needs too much memory) or SIGSTOPs itself
("stop", once per task id: a frozen process in the middle of a chunk). Each action leaves
`<file>.<task id>.<action>.<pid>` behind, so that the drill knows which process it hit.
"""
import os

if os.environ.get("DIGITS_DRILL_FILE"):
    from celery.signals import worker_process_init

    def _install(**_):
        import json
        import signal

        from model import batch
        real = batch.predict_block
        plan_file = os.environ["DIGITS_DRILL_FILE"]

        def predict_block(block, model):
            from celery import current_task
            try:
                with open(plan_file) as f:
                    plan = json.load(f)
            except (OSError, ValueError):
                plan = {}
            tid = current_task.request.id if current_task else None
            action = plan.get(tid)
            if action in ("kill", "stop"):
                if action == "stop" and any(n.startswith(os.path.basename(f"{plan_file}.{tid}.stop."))
                                            for n in os.listdir(os.path.dirname(plan_file))):
                    return real(block, model)  # frozen once already: this delivery runs
                open(f"{plan_file}.{tid}.{action}.{os.getpid()}", "w").close()
                os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGSTOP)
            return real(block, model)

        batch.predict_block = predict_block

    worker_process_init.connect(_install, weak=False)

"""The Python API of the queue, in one import: `from worker.client import Client`.

    Client                       worker.client.api: predict, train, jobs, status, cancel
    submit_prediction, submit_training, FINAL_STATES, status, open_job
                                 worker.client.submission, worker.client.handles
    submit_sweep, sweep_status, cancel_sweep
                                 worker.client.sweeps

The names are imported on first use, so `import worker.client` costs nothing until then.
"""
import importlib

_PUBLIC = {"Client": "api", "submit_prediction": "submission", "submit_training": "submission",
           "status": "handles", "open_job": "handles", "FINAL_STATES": "handles",
           "submit_sweep": "sweeps", "sweep_status": "sweeps", "cancel_sweep": "sweeps"}
__all__ = list(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'worker.client' has no attribute {name!r}")
    return getattr(importlib.import_module(f"worker.client.{_PUBLIC[name]}"), name)

"""The `digits` argument parser: every command, its options, defaults and an example.

Only the standard library and model.recipes are imported here, so `digits --help` starts
fast; a command's own module is imported when it runs.
"""
import argparse
import importlib
import os

from model.recipes import OPTIMIZER_NAMES, RECIPES
from tasks.states import RECORDED
from worker.cli.common import EPILOG, positive_int


STATES = tuple(s.value for s in RECORDED)  # what `digits jobs --state` accepts


def duration(text):
    """An AGE option ("90s", "30m", "2h", "7d") -> seconds."""
    from model.errors import ConfigError
    from worker.settings import parse_duration
    try:
        return parse_duration(text, "age")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_float(text):
    """A number of seconds that must be > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def queue_list(text):
    """--queues: predict, train, or both, comma-separated."""
    from tasks.queueing import QUEUES
    names = [q.strip() for q in text.split(",") if q.strip()]
    unknown = [q for q in names if q not in QUEUES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(QUEUES)} (comma-separated)")
    return ",".join(dict.fromkeys(names))


def local_only_options(a):
    """UsageError when a --local run is given an option of queue jobs."""
    given = [o for o, v in (("--no-wait", a.no_wait), ("--job-id", a.job_id)) if v]
    if a.local and given:
        from model.errors import UsageError
        raise UsageError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} for queue jobs: "
                         f"--local runs in this process")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' line breaks and shows each option's default (unless its help
    already says it, or there is none: a flag, an option that is off when not given)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default in (None, False) or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def _command(module, name):
    """A lazy command: imports worker.cli.<module> when the command runs."""
    def run(a, s):
        return getattr(importlib.import_module(f"worker.cli.{module}"), name)(a, s)
    return run


class _Version(argparse.Action):
    """--version, reading the package version only when asked."""
    def __call__(self, parser, namespace, values, option_string=None):
        from model import version
        print(f"digits {version()}")
        parser.exit()


def build_parser():
    p = argparse.ArgumentParser(
        prog="digits", epilog=EPILOG, formatter_class=_Help,
        description="A NumPy digit recognizer (784-128-10) that trains and bulk-predicts as Celery jobs.")
    p.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, module, func, help_, example):
        sp = sub.add_parser(name, help=help_, description=help_, formatter_class=_Help,
                            epilog=f"example:\n  {example}\n\n{EPILOG}")
        sp.set_defaults(func=_command(module, func), usage=sp.format_usage)
        return sp

    def json_flag(sp):
        sp.add_argument("--json", action="store_true", help="print one JSON object (errors too)")

    sp = add("demo", "services", "cmd_demo", "Train on the bundled sample and bulk-predict it through the queue.",
             "digits demo --out demo/")
    sp.add_argument("--out", help="folder for the sample and the outputs (default DIGITS_HOME/demo)")
    sp.add_argument("--epochs", type=positive_int, default=15, help="training epochs")

    sp = add("up", "services", "cmd_up", "Run the embedded stack (Redis, workers, scheduler, Flower) until Ctrl-C.",
             "digits up --no-flower")
    sp.add_argument("--no-flower", action="store_true", help="do not start Flower")
    sp.add_argument("--idle-exit", type=positive_float, default=None, metavar="SECONDS",
                    help="stop by itself after the queues are idle this long (default: never)")

    sp = add("train", "train", "cmd_train", "Train a model on a Kaggle training CSV or a folder of digit sub-folders.",
             "digits train train.csv --name digits            (or: --local --out model.npz)")
    sp.add_argument("data", help="train.csv (label,pixel0..pixel783) or a folder with sub-folders 0..9")
    sp.add_argument("--out", help="write the model file here too (a path or storage URL)")
    sp.add_argument("--name", help="register the model under this name (queue jobs: digits when not given)")
    sp.add_argument("--recipe", default="default", choices=sorted(RECIPES),
                    help="faithful: the original 10 epochs, lr 0.1, batch 64, plain SGD; default: momentum, "
                         "cosine decay and elastic distortions (best); plain: the default without distortions")
    sp.add_argument("--epochs", type=positive_int, help="passes over the data (default: the recipe's)")
    sp.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    sp.add_argument("--batch-size", type=positive_int, help="images per mini-batch (default: the recipe's)")
    sp.add_argument("--seed", type=int, help="random seed of initialization, order and distortions (default 0)")
    sp.add_argument("--optimizer", choices=OPTIMIZER_NAMES, help="update rule (default: the recipe's)")
    sp.add_argument("--val-fraction", type=float, help="share held out for validation (default 0.1)")
    sp.add_argument("--blas-threads", type=positive_int,
                    help="BLAS threads (default 1; 2 is faster on an otherwise idle 2-core machine, "
                         "much slower when the cores are busy; results differ slightly by count)")
    sp.add_argument("--skip-bad", action="store_true", help="train on the good records and list the bad ones")
    sp.add_argument("--checkpoint-every", type=positive_int, default=1, metavar="EPOCHS",
                    help="queue jobs: checkpoint every N epochs")
    sp.add_argument("--local", action="store_true", help="train in this process instead of on the queue")
    sp.add_argument("--no-wait", action="store_true", help="print the job id and return")
    sp.add_argument("--job-id", help="use this job id (resubmitting an id resumes that job)")

    sp = add("sweep", "sweep", "cmd_sweep",
             "Train one model per configuration of a grid, spread over the train workers; "
             "`sweep list` lists the sweeps, `sweep status ID` shows one's results, `sweep cancel ID` stops it.",
             "digits sweep train.csv --name digits --grid lr=0.05,0.1 --grid epochs=10,20 --grid seed=1,2")
    sp.add_argument("target", metavar="DATA|list|status|cancel",
                    help="the training data (as for `digits train`); list (every sweep); or status / cancel "
                         "followed by a sweep id")
    sp.add_argument("sweep", nargs="?", metavar="ID", help="the sweep id, after status or cancel")
    sp.add_argument("--name", default="digits", help="the model the runs register versions of")
    sp.add_argument("--grid", action="append", metavar="NAME=V1,V2",
                    help="a training option and its values (repeat for more options; every combination runs)")
    sp.add_argument("--recipe", default="default", choices=sorted(RECIPES), help="the base of every run")
    sp.add_argument("--skip-bad", action="store_true", help="train on the good records and list the bad ones")
    sp.add_argument("--no-wait", action="store_true", help="print the sweep id and return")
    json_flag(sp)

    sp = add("predict", "predict", "cmd_predict", "Predict a Kaggle test CSV or a folder of digit images.",
             "digits predict test.csv --model digits --out submission.csv")
    sp.add_argument("input", help="test.csv (pixel0..pixel783, or a labeled file; also .gz, .bz2, .xz, "
                                  "a.zip or a.zip::test.csv) or an image folder")
    sp.add_argument("--model", required=True,
                    help="a model file, or NAME (production, else latest), NAME@ALIAS, NAME:VERSION")
    sp.add_argument("--out", required=True,
                    help="output CSV: ImageId,Label for a CSV; path,label,confidence,preprocessing for images")
    sp.add_argument("--local", action="store_true", help="predict in this process instead of on the queue")
    sp.add_argument("--no-wait", action="store_true", help="print the job id and return")
    sp.add_argument("--chunk-rows", type=positive_int,
                    help="records per chunk (default DIGITS_CHUNK_ROWS for a CSV, DIGITS_CHUNK_IMAGES for images)")
    sp.add_argument("--job-id", help="use this job id (resubmitting an id never duplicates rows)")
    json_flag(sp)

    sp = add("status", "jobs", "cmd_status", "Show a job's state, progress, counts and output.",
             "digits status predict-3f2a9c1b7d6e5f40 --json")
    sp.add_argument("job", help="the job id that submit printed (see `digits jobs`)")
    json_flag(sp)

    sp = add("watch", "jobs", "cmd_watch", "Follow a job's progress live until it ends.",
             "digits watch train-3f2a9c1b7d6e5f40")
    sp.add_argument("job", help="the job id")
    sp.add_argument("--interval", type=positive_float, default=0.5, help="seconds between updates")

    sp = add("cancel", "jobs", "cmd_cancel",
             "Stop a job: remaining chunks or batches are skipped, finished work kept.",
             "digits cancel predict-3f2a9c1b7d6e5f40")
    sp.add_argument("job", help="the job id")

    sp = add("jobs", "jobs", "cmd_jobs",
             "List recent jobs, newest first: id, kind, state, progress, rows or epochs, model and version, "
             "sweep, submitted at (UTC), duration, output. Reads storage only: works with the broker down.",
             "digits jobs --state FAILURE --since 2h")
    sp.add_argument("--state", choices=STATES, help="only jobs in this state (default: any)")
    sp.add_argument("--kind", choices=("predict", "train"), help="only jobs of this kind (default: both)")
    sp.add_argument("--since", type=duration, metavar="AGE",
                    help="only jobs submitted within AGE, such as 90s, 30m, 2h, 7d (default: all)")
    sp.add_argument("--limit", type=positive_int, metavar="N", help="at most N jobs (default: all)")
    sp.add_argument("--sweep", metavar="ID", help="only the training runs of this sweep (see `digits sweep list`)")
    json_flag(sp)

    sp = add("gc", "jobs", "cmd_gc",
             "Remove what jobs ended long ago no longer need: chunk files, uploaded inputs, training states "
             "and leftover result-backend keys. Never a registered model, an output, or a running job's files.",
             "digits gc --older-than 3d --dry-run")
    sp.add_argument("--older-than", type=duration, default="7d", metavar="AGE",
                    help="jobs that ended more than AGE ago (s, m, h, d, w)")
    sp.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    json_flag(sp)

    sp = add("models", "models", "cmd_models", "List registered model versions, their metrics, aliases and reports.",
             "digits models digits --json")
    sp.add_argument("name", nargs="?", help="one model's versions (default: every model)")
    json_flag(sp)

    sp = add("promote", "models", "cmd_promote", "Make a model version the production one.",
             "digits promote digits 3")
    sp.add_argument("name", help="the model name")
    sp.add_argument("version", help="the version to promote (see `digits models NAME`)")

    sp = add("schedule", "models", "cmd_schedule", "Show the retraining schedule and its next run.",
             "DIGITS_RETRAIN_CRON='0 3 * * *' DIGITS_RETRAIN_DATA=train.csv digits schedule")
    json_flag(sp)

    sp = add("worker", "services", "cmd_worker", "Run a Celery worker (for clusters; `digits up` starts its own).",
             "digits worker --queues predict --concurrency 4")
    sp.add_argument("--queues", type=queue_list, default="predict,train", help="predict, train, or predict,train")
    sp.add_argument("--concurrency", type=positive_int, default=os.cpu_count() or 2, help="worker processes")
    sp.add_argument("--max-tasks-per-child", type=positive_int,
                    help="recycle a process after N tasks (default: never)")
    sp.add_argument("--name", help="node name (default: QUEUE@HOSTNAME, e.g. predict@HOSTNAME and train@HOSTNAME, so that a host's workers never share one; worker@HOSTNAME for several queues; %%h is the host name)")
    sp.add_argument("--loglevel", type=str.upper, choices=LOG_LEVELS, default="INFO", help="how much to log")

    sp = add("scheduler", "services", "cmd_scheduler",
             "Run the retraining scheduler (Celery beat) and the watchdog. Run exactly one.",
             "digits scheduler --schedule-file /data/beat-schedule")
    sp.add_argument("--schedule-file", help="beat state file (default DIGITS_HOME/beat-schedule)")
    sp.add_argument("--loglevel", type=str.upper, choices=LOG_LEVELS, default="INFO", help="how much to log")

    sp = add("flower", "services", "cmd_flower", "Run Flower with basic auth from DIGITS_FLOWER_USER/PASSWORD.",
             "DIGITS_FLOWER_USER=ops DIGITS_FLOWER_PASSWORD=... digits flower")
    sp.add_argument("--db", help="Flower's state file (default DIGITS_HOME/flower.db)")
    return p

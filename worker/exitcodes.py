"""Exit codes of the `digits` commands (documented in docs/cli.md, "Exit codes").

    0    success; for `status`, also a job still queued or running
    1    the job failed, ended partial or was cancelled; or a bad input, model or setting
    2    usage error (bad command line)
    3    the broker is unreachable (a submitting or waiting client gave up after
         DIGITS_BROKER_OUTAGE; `status` of an unfinished job whose broker does not answer)
    130  interrupted (Ctrl-C)
"""
from tasks.states import UNSUCCESSFUL, JobState

OK, FAILED, USAGE, BROKER, INTERRUPTED = 0, 1, 2, 3, 130


def for_state(state):
    """Exit code for a job state: FAILED for a job that ended unsuccessfully, BROKER for a
    stalled one (no broker), else OK."""
    if state in UNSUCCESSFUL:
        return FAILED
    return BROKER if state == JobState.STALLED else OK

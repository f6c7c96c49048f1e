"""The states of a job (prediction, training or sweep): the one definition everything imports.

A job is PENDING (queued), PROGRESS (running) or CANCELLING (a cancel was asked) until it
ends; then its manifest says SUCCESS, PARTIAL (some work failed for good: the rest was
written), CANCELLED (stopped; finished work kept) or FAILURE (nothing usable was written).
STALLED is what a client says of an unfinished job when no broker answers: never stored.
JobState is a str, so a state compares equal to its text and goes into JSON as it is.
"""
from enum import StrEnum


class JobState(StrEnum):
    PENDING = "PENDING"
    PROGRESS = "PROGRESS"
    CANCELLING = "CANCELLING"
    SUCCESS = "SUCCESS"
    PARTIAL = "PARTIAL"
    CANCELLED = "CANCELLED"
    FAILURE = "FAILURE"
    STALLED = "STALLED"


FINAL = (JobState.SUCCESS, JobState.PARTIAL, JobState.CANCELLED, JobState.FAILURE)  # a manifest exists
RECORDED = (JobState.PENDING, JobState.PROGRESS, JobState.CANCELLING) + FINAL  # what a record can say
UNSUCCESSFUL = (JobState.PARTIAL, JobState.CANCELLED, JobState.FAILURE)  # ended without all of its work

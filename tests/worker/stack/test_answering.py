"""worker.stack.answering: the crash-loop pacing of `digits up` (pure logic; the hung-worker check is
drilled on a real stack in tests/worker/test_full_redis.py)."""
import time

from worker.stack.answering import CrashLoop


def test_a_crash_looping_worker_is_paced_and_said_once():
    said = []
    loop = CrashLoop(said.append, pause=0.2)
    now = time.monotonic()
    recent = [now - 3, now - 2, now - 1, now - 0.5, now]  # five restarts within the minute
    assert loop.hold("worker-predict", recent, "predict.log")
    assert loop.hold("worker-predict", recent, "predict.log")
    assert len(said) == 1 and "restarting it every 0.2s" in said[0]
    time.sleep(0.25)
    assert not loop.hold("worker-predict", recent, "predict.log")  # its pause is over: restart it
    assert not loop.held

"""Failover drills: the master's host lost for good under a Sentinel-watched Redis (see
tests/cluster/sentinels.py: a master, a replica, three sentinels, each on its own host).

Each drill loses the current master's host (its cable cut, every process SIGKILLed) while a
job runs; the sentinels promote the replica; workers, scheduler and the waiting client find the
new master by themselves. The job must end exact (prediction output byte for byte equal to
`digits predict --local`, assembled once; training weights bit-identical to an uninterrupted
run) within 60 s of the loss. The prediction drill first stalls replication, so that the
failover really loses the tail of writes (queued chunks, marks, unacked entries) and the
watchdog has to send again what is missing. Each drill prints its failover and recovery times.
The drills run in order: the lost master comes back as a replica before the next one.
"""
import re
import shutil
import sys
import time

import numpy as np
import pytest

from tests.cluster.hosts import Cluster, remove_stale
from tests.cluster.sentinels import REDIS_HOSTS, SentinelCluster

REASON = Cluster.unavailable()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(REASON is not None, reason=REASON or "")]
WITHIN = 60  # seconds from the master's loss to the job's end


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    remove_stale()
    c = SentinelCluster.create(tmp_path_factory.mktemp("failover"))
    try:
        c.start_workers(c.shared)
        yield c
    finally:
        c.destroy()


@pytest.fixture(scope="module")
def data(cluster, trained_model):
    from model.data.samples import write_sample
    home = cluster.home("client")
    paths = write_sample(str(home / "sample"))
    with open(paths["test"], "rb") as f:
        header, body = f.readline(), f.read()
    big = home / "big.csv"  # 500 sample rows x 40 = 20,000 rows
    big.write_bytes(header + body * 40)
    shutil.copy(trained_model[1], home / "model.npz")
    return {"csv": paths["test"], "train": paths["train"], "big": str(big), "model": str(home / "model.npz")}


def _reference(cluster, args, out):
    r = cluster.run("client", [*args, "--out", out, "--local"], timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def _spawn_client(cluster, name, args):
    return cluster.spawn(name, "client", [sys.executable, "-m", "worker.cli", *map(str, args)])


def _wait_log(cluster, name, pattern, since=0, timeout=60):
    deadline = time.time() + timeout
    while not re.search(pattern, cluster.log_text(name)[since:]):
        assert time.time() < deadline, f"no {pattern!r} in {name}'s log: {cluster.log_text(name)[-2000:]}"
        time.sleep(0.02)


def _other(host):
    return next(h for h in REDIS_HOSTS if h != host)


def _assembles(cluster, job_id):
    from tasks import keys
    return int(cluster.redis().get(keys.assemble_runs(job_id)) or 0)


def _lose_master(cluster, stall=0.0):
    """Lose the current master's host (after stalling its replication for `stall` seconds)
    -> (lost host, the time of the loss, seconds until the sentinels named the replica)."""
    master = cluster.master_host()
    assert master in REDIS_HOSTS, master
    if stall:
        cluster.stall_replication(master)
        time.sleep(stall)  # the job goes on writing to the master only: the tail the failover loses
    lost_at = time.time()
    cluster.lose_host(master)  # its cable cut first, then its processes killed
    killed = time.time() - lost_at
    cluster.wait_master(_other(master), timeout=WITHIN)
    failover = time.time() - lost_at
    print(f"(the host's processes were all dead {killed:.1f}s after its cable was cut)")
    print(f"\nfailover: the sentinels named {_other(master)} master {failover:.1f}s after {master} was lost")
    return master, lost_at, failover


def _finish(cluster, name, proc, lost_at, what):
    proc.wait(WITHIN + 30)
    done = time.time() - lost_at
    text = cluster.log_text(name)
    said = [ln[ln.index("digits:"):] for ln in text.splitlines()
            if "digits:" in ln and ("unreachable" in ln or "Redis failover" in ln)]
    print(f"recovery: the {what} ended {done:.1f}s after the master's loss; the client said: {said}")
    assert proc.returncode == 0, text
    assert "Traceback" not in text, text
    assert done <= WITHIN, f"the {what} took {done:.1f}s after the master's loss"
    # a waiting client says the failover once (and the outage before it, at most once)
    assert len([ln for ln in said if "Redis failover" in ln]) == 1, said
    assert len([ln for ln in said if "unreachable" in ln]) <= 1, said
    return text


def test_master_host_lost_mid_prediction_with_its_unreplicated_tail(cluster, data):
    """Replication is stalled for 1 s mid-job, then the master's host is lost: the replica is
    promoted without the last chunks' marks, queued chunks and unacked entries; the watchdog
    sends again exactly what is missing; the output is exact and assembled once."""
    ref = _reference(cluster, ["predict", data["big"], "--model", data["model"]],
                     cluster.home("client") / "ref-big.csv").read_bytes()
    out = cluster.home("client") / "failover-predict.csv"
    since = {h: len(cluster.log_text(f"{h}-predict")) for h in ("w1", "w2")}
    proc = _spawn_client(cluster, "client-failover", ["predict", data["big"], "--model", data["model"],
                                                      "--out", out, "--chunk-rows", 50])
    _wait_log(cluster, "w1-predict", r"predict_chunk\[\S+\] succeeded", since["w1"])
    lost, lost_at, _ = _lose_master(cluster, stall=1.0)
    assert proc.poll() is None, "the job had ended before the master was lost"
    text = _finish(cluster, "client-failover", proc, lost_at, "prediction")
    assert open(out, "rb").read() == ref
    job_id = re.search(r"prediction job (\S+)", text).group(1)
    assert _assembles(cluster, job_id) == 1
    lost_marks = re.findall(rf"watchdog: (?:job {re.escape(job_id)} had not moved|requeued task {re.escape(job_id)})",
                            cluster.log_text("scheduler"))
    print(f"the watchdog acted {len(lost_marks)} time(s) for the job's lost tail")
    assert lost_marks, "the failover lost nothing: the drill did not drill the lost tail"
    cluster.lost = lost


def _bring_back(cluster, lost):
    """The lost host back, its Redis on its own (stale) data, until the sentinels made it a
    replica of the master -> seconds that took."""
    master = cluster.master_host()
    cluster.bring_back(lost)
    start = time.time()
    while True:
        try:
            if cluster.role(lost) == "slave" and cluster.master_host() == master:
                break
        except Exception:  # the old master is still starting or loading its data: ask again (bounded below)
            pass
        assert time.time() - start < 60, "the old master did not rejoin as a replica"
        time.sleep(0.2)
    took = time.time() - start
    cluster.wait_group()
    return took


def test_the_old_master_comes_back_as_a_replica(cluster, data):
    """The lost host's Redis starts again on its own (stale) data: the sentinels make it a
    replica of the new master, it takes the new master's data, and a job ends exact."""
    lost = getattr(cluster, "lost", None) or pytest.skip("no master was lost before")
    took = _bring_back(cluster, lost)
    print(f"\nthe old master {lost} rejoined as a replica of {cluster.master_host()} {took:.1f}s after it came back")
    ref = _reference(cluster, ["predict", data["csv"], "--model", data["model"]],
                     cluster.home("client") / "ref-csv.csv").read_bytes()
    out = cluster.home("client") / "after-return.csv"
    r = cluster.run("client", ["predict", data["csv"], "--model", data["model"], "--out", out, "--chunk-rows", 50])
    assert r.returncode == 0, r.stderr
    assert open(out, "rb").read() == ref
    job_id = re.search(r"prediction job (\S+)", r.stderr).group(1)
    assert _assembles(cluster, job_id) == 1
    import redis
    from tasks import keys
    old = redis.Redis(host=cluster.ip[lost], port=6379, username="digits", password=cluster.password, ssl=True,
                      ssl_ca_certs=cluster.certs["ca"], db=1, socket_timeout=2)
    deadline = time.time() + 20
    while int(old.get(keys.assemble_runs(job_id)) or 0) != 1:  # the job's state replicated to it, not split
        assert time.time() < deadline, "the old master did not take the new master's writes"
        time.sleep(0.1)
    with pytest.raises(redis.ReadOnlyError):
        old.set("split", "brain")


def test_master_host_lost_mid_training(cluster, data):
    """The master's host is lost while a training job runs: the training worker rides the
    failover out and the weights are bit-identical to an uninterrupted run."""
    from model import checkpoint
    if cluster.master_host() is None or any(cluster.procs.get(n) is None for n in ("redis", "replica-redis")):
        pytest.skip("needs a master and a replica (the drills before failed)")
    args = ["train", data["train"], "--recipe", "default", "--epochs", 40, "--seed", 5]
    local = _reference(cluster, args, cluster.home("client") / "train-local.npz")
    queued = cluster.home("client") / "train-failover.npz"
    since = {h: len(cluster.log_text(f"{h}-train")) for h in ("w1", "w2")}
    proc = _spawn_client(cluster, "client-train", [*args, "--name", "failover", "--out", queued])
    deadline = time.time() + 60
    while not any(re.search(r"train_job\[\S+\] received", cluster.log_text(f"{h}-train")[since[h]:])
                  for h in ("w1", "w2")):
        assert time.time() < deadline and proc.poll() is None, cluster.log_text("client-train")
        time.sleep(0.02)
    cluster.lost, lost_at, _ = _lose_master(cluster)
    assert proc.poll() is None, "the training had ended before the master was lost"
    _finish(cluster, "client-train", proc, lost_at, "training")
    a, b = checkpoint.load_model(str(queued)), checkpoint.load_model(str(local))
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_jobs_submitted_in_the_lost_tail_are_sent_again(cluster, data):
    """Every worker is down (busy elsewhere) and replication stalled while a prediction and a
    training job are submitted: all Redis had of them (queued messages, the active set, the
    model's marker) is on the master only when its host is lost. The workers come back after
    the failover; the watchdog finds both jobs from storage, sends them again, and both end
    exact within 60 s of the loss."""
    from model import checkpoint
    lost = getattr(cluster, "lost", None) or pytest.skip("no master was lost before")
    _bring_back(cluster, lost)
    ref = _reference(cluster, ["predict", data["csv"], "--model", data["model"]],
                     cluster.home("client") / "ref-csv.csv").read_bytes()
    args = ["train", data["train"], "--recipe", "default", "--epochs", 3, "--seed", 7]
    local = _reference(cluster, args, cluster.home("client") / "tail-local.npz")
    out, queued = cluster.home("client") / "tail.csv", cluster.home("client") / "tail.npz"
    cluster.stop_worker_processes()
    cluster.stall_replication(cluster.master_host())
    predict = _spawn_client(cluster, "client-tail-predict", ["predict", data["csv"], "--model", data["model"],
                                                             "--out", out, "--chunk-rows", 50])
    train = _spawn_client(cluster, "client-tail-train", [*args, "--name", "tail", "--out", queued])
    _wait_log(cluster, "client-tail-predict", r"prediction job \S+")
    _wait_log(cluster, "client-tail-train", r"training job \S+")
    _, lost_at, _ = _lose_master(cluster)
    cluster.start_worker_processes()
    _finish(cluster, "client-tail-predict", predict, lost_at, "prediction submitted in the lost tail")
    _finish(cluster, "client-tail-train", train, lost_at, "training submitted in the lost tail")
    assert open(out, "rb").read() == ref
    a, b = checkpoint.load_model(str(queued)), checkpoint.load_model(str(local))
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    log = cluster.log_text("scheduler")
    assert re.search(r"prediction job \S+ was lost with the failover", log), log[-3000:]
    assert re.search(r"training job \S+ was lost with the failover: sent again", log), log[-3000:]


def test_the_first_sentinel_listed_down(cluster, data):
    """The host of the sentinel listed first in every URL is lost: clients, workers and the
    watchdog ask the next ones; a job ends exact and a worker started now finds the master."""
    if cluster.master_host() is None:
        pytest.skip("no master (the drills before failed)")
    ref = _reference(cluster, ["predict", data["csv"], "--model", data["model"]],
                     cluster.home("client") / "ref-csv.csv").read_bytes()
    out = cluster.home("client") / "sen1-down.csv"
    start = time.time()
    r = cluster.run("client", ["predict", data["csv"], "--model", data["model"], "--out", out, "--chunk-rows", 50])
    before = time.time() - start
    assert r.returncode == 0, r.stderr
    cluster.lose_host("sen1")
    start = time.time()
    r = cluster.run("client", ["predict", data["csv"], "--model", data["model"], "--out", out, "--chunk-rows", 50])
    print(f"\na prediction took {before:.1f}s with every sentinel up, {time.time() - start:.1f}s with the first "
          "one listed down")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert open(out, "rb").read() == ref
    cluster.kill_host("w1")
    cluster.start_workers(cluster.shared, hosts=("w1",), train=False)
    r = cluster.run("client", ["status", re.search(r"prediction job (\S+)", r.stderr).group(1)])
    assert r.returncode == 0, r.stderr

"""Multi-host drills: Redis (TLS, an ACL user), an S3 stand-in, two worker hosts and a client,
each in its own network namespace with its own host name, HOME and DIGITS_HOME, sharing
nothing but the network (and, in shared-folder mode, one folder: the NFS stand-in).
See tests/cluster/hosts.py. Skipped with the reason where namespaces cannot be made.

Every job is submitted from the client with the client's own local input and --out
(invisible to the worker hosts), and its output must equal `digits predict --local`
byte for byte, with exactly one assemble.
"""
import json
import re
import shutil
import time

import numpy as np
import pytest

from tests.cluster.hosts import Cluster, remove_stale

REASON = Cluster.unavailable()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    remove_stale()
    c = Cluster.create(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.destroy()


@pytest.fixture(scope="module")
def data(cluster, trained_model):
    """The client's own files (under its HOME): a CSV, an image folder, training data, a model."""
    from model.data.samples import write_sample
    home = cluster.home("client")
    paths = write_sample(str(home / "sample"))
    with open(paths["test"], "rb") as f:
        header, body = f.readline(), f.read()
    big = home / "big.csv"  # 500 sample rows x 40 = 20,000 rows
    big.write_bytes(header + body * 40)
    shutil.copy(trained_model[1], home / "model.npz")
    return {"csv": paths["test"], "images": paths["images_test"], "train": paths["train"],
            "big": str(big), "model": str(home / "model.npz"), "home": home}


SERVICES = ("w1-predict", "w1-train", "w2-predict", "w2-train", "scheduler")


def ensure_workers(cluster, storage):
    """Every worker and the scheduler running with `storage` (started anew otherwise)."""
    if cluster.storage != str(storage) or not all(
            n in cluster.procs and cluster.procs[n].poll() is None for n in SERVICES):
        cluster.start_workers(storage)


def local_reference(cluster, src, model, name):
    """`digits predict --local` on the client -> the bytes of its output."""
    out = cluster.home("client") / f"ref-{name}.csv"
    if not out.exists():
        r = cluster.run("client", ["predict", src, "--model", model, "--out", out, "--local"])
        assert r.returncode == 0, r.stderr
    return out.read_bytes()


def job_id_of(stderr):
    m = re.search(r"prediction job (\S+)", stderr)
    assert m, stderr
    return m.group(1)


def assembles(cluster, job_id):
    from tasks import keys
    return int(cluster.redis().get(keys.assemble_runs(job_id)) or 0)


def chunk_hosts(cluster, job_id):
    """{host: chunks of job_id that host's predict worker finished}."""
    out = {}
    for h in ("w1", "w2"):
        text = cluster.log_text(f"{h}-predict")
        out[h] = len(re.findall(rf"Task digits\.predict_chunk\[{re.escape(job_id)}-chunk-\d+\] succeeded", text))
    return out


def predict(cluster, src, out, model, *extra, timeout=240):
    r = cluster.run("client", ["predict", src, "--model", model, "--out", out, *map(str, extra)], timeout=timeout)
    return r


def check_exact(cluster, r, out, ref, job_id=None):
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"predictions to {out}" in r.stdout, r.stdout  # the success line names the client's file
    assert "Traceback" not in r.stderr, r.stderr
    assert open(out, "rb").read() == ref
    job_id = job_id or job_id_of(r.stderr)
    assert assembles(cluster, job_id) == 1
    return job_id


# --------------------------------------------------------------------------- shared folder

def test_worker_names_are_unique(cluster, data):
    ensure_workers(cluster, cluster.shared)
    seen = cluster.wait_workers({"predict@w1", "train@w1", "predict@w2", "train@w2"})
    assert len(seen) == len(set(seen)) == 4, seen


def test_client_local_paths_go_through_a_shared_folder(cluster, data):
    """Input and --out on the client only: the input is copied into the shared folder, the
    output is written there and downloaded to the client's --out, which the success line names."""
    ensure_workers(cluster, cluster.shared)
    ref = local_reference(cluster, data["csv"], data["model"], "csv")
    out = cluster.home("client") / "sub.csv"
    r = predict(cluster, data["csv"], out, data["model"], "--chunk-rows", 50)
    job_id = check_exact(cluster, r, out, ref)
    job = json.loads((cluster.shared / "jobs" / job_id / "job.json").read_text())
    assert job["input"].startswith(str(cluster.shared / "inputs" / job_id)), job["input"]
    assert job["output"].startswith(str(cluster.shared / "jobs" / job_id)), job["output"]
    hosts = chunk_hosts(cluster, job_id)
    assert hosts["w1"] and hosts["w2"], hosts  # both hosts predicted chunks

    ref_img = local_reference(cluster, data["images"], data["model"], "images")
    out_img = cluster.home("client") / "images.csv"
    r = predict(cluster, data["images"], out_img, data["model"], "--chunk-rows", 50)
    check_exact(cluster, r, out_img, ref_img)


def test_paths_inside_the_shared_folder_are_used_in_place(cluster, data):
    ensure_workers(cluster, cluster.shared)
    ref = local_reference(cluster, data["csv"], data["model"], "csv")
    src = cluster.shared / "in" / "test.csv"
    src.parent.mkdir(exist_ok=True)
    shutil.copy(data["csv"], src)
    out = cluster.shared / "out" / "sub.csv"
    out.parent.mkdir(exist_ok=True)
    r = predict(cluster, src, out, data["model"], "--chunk-rows", 100)
    job_id = check_exact(cluster, r, out, ref)
    job = json.loads((cluster.shared / "jobs" / job_id / "job.json").read_text())
    assert job["input"] == str(src) and job["output"] == str(out)
    assert not (cluster.shared / "inputs" / job_id / "input.csv").exists()


def _background_predict(cluster, name, src, out, model, chunk_rows):
    import sys
    return cluster.spawn(name, "client", [sys.executable, "-m", "worker.cli", "predict", src, "--model", model,
                                          "--out", out, "--chunk-rows", chunk_rows])


def _log_end(cluster, host):
    return len(cluster.log_text(f"{host}-predict"))


def _holds_chunk(cluster, host, since):
    """True when host's predict worker has received a chunk and not finished it, in its log
    after offset `since` (earlier lines may hold a chunk of a killed worker)."""
    text = cluster.log_text(f"{host}-predict")[since:]
    got = len(re.findall(r"Task digits\.predict_chunk\[\S+\] received", text))
    done = len(re.findall(r"Task digits\.predict_chunk\[\S+\] (succeeded|retry)", text))
    return got > done


def _wait_chunk_taken(cluster, host, since, timeout=60):
    """Until host's predict worker holds a chunk (_holds_chunk) -> True."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _holds_chunk(cluster, host, since):
            return True
        time.sleep(0.02)
    raise AssertionError(f"{host} took no chunk within {timeout}s")


def _freeze_holding_chunk(cluster, host, since, timeout=60):
    """Until host is frozen (every process SIGSTOPped) while its predict worker holds a chunk
    it has not finished, so not acknowledged either: a chunk takes about 20 ms, and one that
    ended between the log's look and the freeze is let go (the host thawed) for the next."""
    deadline = time.time() + timeout
    while True:
        _wait_chunk_taken(cluster, host, since, max(0.1, deadline - time.time()))
        cluster.freeze_host(host)
        if _holds_chunk(cluster, host, since):  # the log as it stands, now that nothing on host runs
            return
        cluster.thaw_host(host)


def _requeued_and_assembled_once(cluster, text, out, ref):
    """After a job whose worker host was lost holding a chunk: the watchdog requeues that
    delivery (grace 3 s, two scans), also when the chunk had been marked just before the
    loss and the job could end without it; the requeued copy, a repeat, assembles nothing
    more and changes no byte of the output -> the job id."""
    job_id = job_id_of(text)
    deadline = time.time() + 30
    while not re.search(rf"watchdog: requeued task {job_id}-chunk-", cluster.log_text("scheduler")):
        assert time.time() < deadline, "the watchdog never requeued the lost host's delivery"
        time.sleep(0.2)
    time.sleep(1)  # time for the requeued copy to run
    assert assembles(cluster, job_id) == 1
    assert open(out, "rb").read() == ref
    return job_id


def _finish(cluster, name, proc, timeout):
    proc.wait(timeout)
    text = cluster.log_text(name)
    return proc.returncode, text


def test_sigkill_of_a_worker_host_mid_job(cluster, data):
    """A worker host dies whole (every process SIGKILLed) holding a chunk: the watchdog puts it
    back, the other host finishes the job, exact, assembled once."""
    ensure_workers(cluster, cluster.shared)
    ref = local_reference(cluster, data["big"], data["model"], "big")
    out = cluster.home("client") / "big-kill.csv"
    since = _log_end(cluster, "w2")
    proc = _background_predict(cluster, "client-kill", data["big"], out, data["model"], 1000)
    _freeze_holding_chunk(cluster, "w2", since)
    cluster.kill_host("w2")
    code, text = _finish(cluster, "client-kill", proc, 180)
    assert code == 0, text
    assert open(out, "rb").read() == ref
    assert f"predictions to {out}" in text and "Traceback" not in text
    _requeued_and_assembled_once(cluster, text, out, ref)


def test_redis_restart_mid_job(cluster, data):
    """Redis is SIGKILLed and started again on its append-only file mid-job: workers and the
    waiting client ride it out; the output is exact and assembled once."""
    ensure_workers(cluster, cluster.shared)
    ref = local_reference(cluster, data["big"], data["model"], "big")
    out = cluster.home("client") / "big-redis.csv"
    since = _log_end(cluster, "w1")
    proc = _background_predict(cluster, "client-redis", data["big"], out, data["model"], 1000)
    _wait_chunk_taken(cluster, "w1", since)
    cluster.restart_redis()
    code, text = _finish(cluster, "client-redis", proc, 180)
    assert code == 0, text
    assert open(out, "rb").read() == ref
    assert assembles(cluster, job_id_of(text)) == 1


def test_a_client_submitting_while_redis_is_down_waits_for_it(cluster, data):
    """Redis is SIGKILLed before a client submits, and started again on its append-only file
    once the client has said (in one line) that it is unreachable: the submission waits for
    it and the job ends exact, assembled once."""
    ensure_workers(cluster, cluster.shared)
    ref = local_reference(cluster, data["csv"], data["model"], "csv")
    out = cluster.home("client") / "redis-down.csv"
    cluster.kill_redis()
    try:
        proc = _background_predict(cluster, "client-down", data["csv"], out, data["model"], 100)
        deadline = time.time() + 60
        while "unreachable" not in cluster.log_text("client-down"):
            assert proc.poll() is None and time.time() < deadline, cluster.log_text("client-down")
            time.sleep(0.1)
    finally:
        cluster.start_redis()
    code, text = _finish(cluster, "client-down", proc, 180)
    assert code == 0, text
    assert open(out, "rb").read() == ref
    assert len([ln for ln in text.splitlines() if "unreachable" in ln]) == 1, text
    assert "Traceback" not in text and assembles(cluster, job_id_of(text)) == 1


def test_clients_without_credentials_or_trust_are_refused(cluster, data):
    """No password, a wrong password, a CA that did not sign the server's certificate: each
    refused in one line that names the broker (its password hidden), exit 1, no traceback."""
    ensure_workers(cluster, cluster.shared)
    out = cluster.home("client") / "refused.csv"
    cases = {"no password": {"DIGITS_BROKER_URL": cluster.broker_url(user=None),
                             "DIGITS_RESULT_BACKEND": cluster.broker_url(user=None, db=1)},
             "wrong password": {"DIGITS_BROKER_URL": cluster.broker_url(password="wrong"),
                                "DIGITS_RESULT_BACKEND": cluster.broker_url(password="wrong", db=1)},
             "untrusted certificate": {"DIGITS_REDIS_CA": cluster.certs["other_ca"]}}
    for what, env in cases.items():
        r = cluster.run("client", ["predict", data["csv"], "--model", data["model"], "--out", out], env=env,
                        timeout=60)
        assert r.returncode == 1, (what, r.returncode, r.stderr)
        assert "refused this client" in r.stderr, (what, r.stderr)
        assert "Traceback" not in r.stderr and cluster.password not in r.stderr, (what, r.stderr)
        assert not out.exists()


# --------------------------------------------------------------------------- S3

def test_s3_csv_images_and_training_from_the_client(cluster, data):
    from model import checkpoint
    ensure_workers(cluster, cluster.s3_storage("digits"))
    ref = local_reference(cluster, data["csv"], data["model"], "csv")
    out = cluster.home("client") / "s3-sub.csv"
    r = predict(cluster, data["csv"], out, data["model"], "--chunk-rows", 50)
    job_id = check_exact(cluster, r, out, ref)
    assert chunk_hosts(cluster, job_id)["w1"] and chunk_hosts(cluster, job_id)["w2"]

    ref_img = local_reference(cluster, data["images"], data["model"], "images")
    out_img = cluster.home("client") / "s3-images.csv"
    r = predict(cluster, data["images"], out_img, data["model"], "--chunk-rows", 50)
    check_exact(cluster, r, out_img, ref_img)

    queued, local = cluster.home("client") / "m-queue.npz", cluster.home("client") / "m-local.npz"
    args = ["train", data["train"], "--recipe", "faithful", "--epochs", "2", "--seed", "3"]
    r = cluster.run("client", args + ["--name", "cluster", "--out", queued])
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    r = cluster.run("client", args + ["--local", "--out", local])
    assert r.returncode == 0, r.stderr
    a, b = checkpoint.load_model(str(queued)), checkpoint.load_model(str(local))
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_s3_link_cut_for_30s_mid_chunk(cluster, data):
    """A worker host's cable is pulled for 30 s right after it took a chunk: the job ends
    complete and exact (the watchdog gives the chunk to the other host; the cut host's own
    retries and late writes change nothing), assembled once; the cut host works again after."""
    ensure_workers(cluster, cluster.s3_storage("digits"))
    ref = local_reference(cluster, data["big"], data["model"], "big")
    out = cluster.home("client") / "s3-big-cut.csv"
    since = _log_end(cluster, "w2")
    proc = _background_predict(cluster, "client-cut", data["big"], out, data["model"], 2000)
    _freeze_holding_chunk(cluster, "w2", since)
    cluster.cut("w2")
    cluster.thaw_host("w2")  # it runs on, its cable pulled
    try:
        time.sleep(30)
    finally:
        cluster.heal("w2")
    code, text = _finish(cluster, "client-cut", proc, 180)
    assert code == 0, text
    assert open(out, "rb").read() == ref
    job_id = _requeued_and_assembled_once(cluster, text, out, ref)
    cluster.wait_workers({"predict@w2"}, timeout=120)  # the cut host is back in the cluster
    assert assembles(cluster, job_id) == 1

"""docker-compose.yml's `sentinel` profile: a replica of `redis` and three sentinels
(docs/cluster.md), as Compose resolves it, the URLs it gives the app services, and a real
redis-sentinel started on the configuration it writes. Helpers and the `config` fixture
are test_compose's."""
import os
import re
import shutil
import subprocess

import pytest

from tests.deploy.test_compose import (ENV_EXAMPLE, SENTINEL_PROFILE, _app_services, _env, _mounts, _parse,  # noqa: F401
                                       _ports, _run_config, _words, config)

def _sentinel_lines(service):
    """The sentinel configuration a sentinel service writes, one line per item."""
    script = _words(service["command"])[-1]
    return [item for item in re.findall(r"""['"]([^'"]+)['"]""", script.split(">", 1)[0])
            if not item.startswith("%")]  # printf's format


def test_sentinel_profile_runs_a_replica_and_three_sentinels(config):
    services = config["services"]
    profiled = {name for name, s in services.items() if "sentinel" in (s.get("profiles") or [])}
    assert profiled == SENTINEL_PROFILE
    master, replica = _words(services["redis"]["command"]), _words(services["redis-replica"]["command"])
    assert "--masterauth" in master, "the master must be able to follow the replica once that is promoted"
    joined = " ".join(replica)
    assert "--replicaof redis 6379" in joined and "--masterauth" in replica and "--requirepass" in replica
    for setting in ("--appendonly yes", "--maxmemory-policy noeviction"):
        assert setting in joined, f"the replica lacks the master's {setting}"
    hostnames, volumes = set(), set()
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        s = services[name]
        lines = _sentinel_lines(s)
        assert "sentinel monitor digits redis 6379 2" in lines, lines  # quorum 2 of 3
        assert any(ln.startswith("sentinel auth-pass digits ") for ln in lines)
        assert any(ln.startswith("requirepass ") for ln in lines)
        assert "sentinel resolve-hostnames yes" in lines
        hostnames.add(s["hostname"])
        volumes.update(src for src, _ in _mounts(s))
        assert not _ports(s), f"{name} publishes a port"
    assert len(hostnames) == 3 and len(volumes) == 3, (hostnames, volumes)


def test_the_app_services_follow_the_sentinels_when_told(tmp_path):
    """REDIS_SCHEME=sentinel and REDIS_HOSTS=the three sentinels give every app service a
    sentinel:// URL that worker.sentinel reads as three sentinels, Redis's password and the
    master's name, and Celery settings that name the master."""
    from worker import sentinel, settings
    from worker.app import celery_config
    env_file = tmp_path / "sentinel.env"
    env_file.write_text(ENV_EXAMPLE.read_text().replace("REDIS_SCHEME=redis", "REDIS_SCHEME=sentinel").replace(
        "REDIS_HOSTS=redis:6379", "REDIS_HOSTS=sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"))
    cmd, v2, proc = _run_config(env_file)
    assert proc.returncode == 0, proc.stderr
    cfg = _parse(proc.stdout, v2)
    for name, s in _app_services(cfg).items():
        env = _env(s)
        t = sentinel.parse(env["DIGITS_BROKER_URL"])
        assert t.sentinels == (("sentinel-1", 26379), ("sentinel-2", 26379), ("sentinel-3", 26379)), name
        assert t.password and t.db == 0 and sentinel.parse(env["DIGITS_RESULT_BACKEND"]).db == 1, name
        old = dict(os.environ)
        try:
            os.environ.update({k: v for k, v in env.items() if k.startswith("DIGITS_SENTINEL")},
                              DIGITS_BROKER_URL=env["DIGITS_BROKER_URL"],
                              DIGITS_RESULT_BACKEND=env["DIGITS_RESULT_BACKEND"])
            c = celery_config(settings.load())
        finally:
            os.environ.clear()
            os.environ.update(old)
        assert c["broker_transport_options"]["master_name"] == "digits", name
        assert c["result_backend_transport_options"]["sentinel_kwargs"]["password"] == t.password, name


def test_redis_sentinel_accepts_the_profiles_configuration(config, tmp_path):
    """The lines a sentinel service writes, with this machine's addresses for the container
    names, start a real redis-sentinel that monitors a real master under the name digits."""
    import socket
    import time
    import redis
    exe = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
    server = "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else shutil.which("redis-server")
    if not (os.path.exists(exe) and server):
        pytest.skip("redis-sentinel and redis-server are needed (apt-get install redis-sentinel)")
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    master_port, sentinel_port = ports
    lines = [ln.replace("$$(hostname)", "127.0.0.1").replace("$(hostname)", "127.0.0.1")
             .replace("digits redis 6379", f"digits 127.0.0.1 {master_port}").replace("port 26379", f"port {sentinel_port}")
             for ln in _sentinel_lines(config["services"]["sentinel-1"])]
    password = next(ln.split()[-1] for ln in lines if ln.startswith("requirepass "))
    conf = tmp_path / "sentinel.conf"
    conf.write_text("\n".join(lines + [f"dir {tmp_path}", "bind 127.0.0.1"]) + "\n")
    procs = [subprocess.Popen([server, "--port", str(master_port), "--bind", "127.0.0.1", "--save", "",
                               "--requirepass", password], stdout=subprocess.DEVNULL),
             subprocess.Popen([exe, str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    try:
        client = redis.Redis(port=sentinel_port, password=password, socket_timeout=2)
        deadline = time.time() + 20
        while True:
            try:
                state = client.sentinel_master("digits")
                if "s_down" not in state["flags"] and state["port"] == master_port:
                    break
            except redis.RedisError:
                pass
            assert procs[1].poll() is None, procs[1].stdout.read()
            assert time.time() < deadline, "the sentinel never saw the master up"
            time.sleep(0.2)
    finally:
        for p in procs:
            p.kill()
            p.wait(10)

"""rediss:// against a real TLS Redis (Debian's redis-server) on 127.0.0.1 that requires client
certificates and an ACL user: the project's settings connect the broker, the result backend
and the quick probe; a client without a certificate, or that does not trust the server's,
is refused. Certificates are made by openssl in a temporary folder (never committed)."""
import socket
import ssl
import subprocess
import time

from types import SimpleNamespace

import pytest
import redis

from model.errors import ConfigError
from tests.cluster.hosts import make_certs, redis_server_tls
from worker import settings
from worker.app import make_app
from worker.stack.broker import broker_reachable

EXE = redis_server_tls()
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(EXE is None, reason="no redis-server with TLS (apt-get install redis-server)")]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    certs = make_certs(folder / "certs", ["127.0.0.1"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = folder / "redis.conf"
    conf.write_text("\n".join([
        "bind 127.0.0.1", "port 0", f"tls-port {port}", f"tls-cert-file {certs['server_cert']}",
        f"tls-key-file {certs['server_key']}", f"tls-ca-cert-file {certs['ca']}", "tls-auth-clients yes",
        "user default off", "user digits on >tls-test-pw ~* &* +@all", f"dir {folder}", 'save ""', ""]))
    proc = subprocess.Popen([EXE, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://digits:tls-test-pw@127.0.0.1:{port}/0"
    ok = dict(ssl_ca_certs=certs["ca"], ssl_certfile=certs["client_cert"], ssl_keyfile=certs["client_key"])
    deadline = time.time() + 20
    while not broker_reachable(url, settings=SimpleNamespace(redis_tls=lambda: ok)):
        assert proc.poll() is None and time.time() < deadline, "TLS Redis did not start"
        time.sleep(0.1)
    yield url, certs
    proc.kill()
    proc.wait()


def _env(monkeypatch, url, **files):
    monkeypatch.setenv("DIGITS_BROKER_URL", url)
    monkeypatch.setenv("DIGITS_RESULT_BACKEND", url.rsplit("/", 1)[0] + "/1")
    for name in ("DIGITS_REDIS_CA", "DIGITS_REDIS_CERT", "DIGITS_REDIS_KEY", "DIGITS_REDIS_VERIFY"):
        monkeypatch.delenv(name, raising=False)
    for name, path in files.items():
        monkeypatch.setenv(name, path)
    return settings.load()


def test_broker_backend_and_probe_connect_with_the_settings(tls_redis, monkeypatch):
    url, certs = tls_redis
    s = _env(monkeypatch, url, DIGITS_REDIS_CA=certs["ca"], DIGITS_REDIS_CERT=certs["client_cert"],
             DIGITS_REDIS_KEY=certs["client_key"])
    assert s.redis_tls()["ssl_cert_reqs"] == ssl.CERT_REQUIRED  # checks on by default
    assert broker_reachable(url, settings=s)
    app = make_app(s)
    assert app.backend.client.ping()
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        conn.default_channel.client.ping()


def test_a_client_without_a_certificate_is_refused(tls_redis, monkeypatch):
    url, certs = tls_redis
    s = _env(monkeypatch, url, DIGITS_REDIS_CA=certs["ca"])
    assert not broker_reachable(url, settings=s)
    with pytest.raises(redis.ConnectionError):
        make_app(s).backend.client.ping()


def test_a_client_that_does_not_trust_the_server_is_refused(tls_redis, monkeypatch):
    url, certs = tls_redis
    s = _env(monkeypatch, url, DIGITS_REDIS_CA=certs["other_ca"], DIGITS_REDIS_CERT=certs["client_cert"],
             DIGITS_REDIS_KEY=certs["client_key"])
    assert not broker_reachable(url, settings=s)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        make_app(s).backend.client.ping()


def test_tls_settings_are_checked(tls_redis, monkeypatch):
    url, certs = tls_redis
    monkeypatch.setenv("DIGITS_REDIS_VERIFY", "sometimes")
    with pytest.raises(ConfigError, match="DIGITS_REDIS_VERIFY"):
        settings.load()
    monkeypatch.setenv("DIGITS_REDIS_VERIFY", "none")
    assert settings.load().redis_tls()["ssl_cert_reqs"] == ssl.CERT_NONE
    monkeypatch.setenv("DIGITS_REDIS_CA", "/nonexistent/ca.crt")
    with pytest.raises(ConfigError, match="/nonexistent/ca.crt"):
        settings.load()


def test_the_send_path_speaks_tls_and_acl_and_refusals_are_typed(tls_redis, monkeypatch):
    """What `digits predict` sends through (the Celery app, and worker.redisconn's clients)
    with the same settings: a task message lands in the broker's queue, a Redis client of
    redisconn reaches the result backend's database, and the clients the checks above refuse
    are refused in errors the CLI knows as a refusal by their type, not their words."""
    from tasks import queueing
    from worker import redisconn
    from worker.outage import cut_short, refused
    url, certs = tls_redis
    s = _env(monkeypatch, url, DIGITS_REDIS_CA=certs["ca"], DIGITS_REDIS_CERT=certs["client_cert"],
             DIGITS_REDIS_KEY=certs["client_key"])
    app = make_app(s)
    queueing.queue_assemble(app, "job-tls")
    broker = redisconn.connect(url, s)
    assert b"job-tls:assemble" in broker.lpop("predict")
    app.backend.client.set("tls-key", "v")
    assert redisconn.connect(s.result_backend, s).get("tls-key") == b"v"  # the backend is db 1, as Celery's
    for files in (dict(DIGITS_REDIS_CA=certs["other_ca"], DIGITS_REDIS_CERT=certs["client_cert"],
                       DIGITS_REDIS_KEY=certs["client_key"]),  # the server is not trusted
                  dict(DIGITS_REDIS_CA=certs["ca"])):  # no client certificate: an alert, or a hang-up
        bad = _env(monkeypatch, url, **files)
        for attempt in (lambda: redisconn.connect(url, bad).ping(), lambda: make_app(bad).backend.client.ping()):
            with pytest.raises(redis.ConnectionError) as e:
                attempt()
            assert refused(e.value), repr(e.value)  # the CLI says "refused this client", not "unreachable"
        if "DIGITS_REDIS_CERT" in files:
            assert not cut_short(e.value)  # an untrusted server is no stream cut short: never retried
    wrong = url.replace("tls-test-pw", "wrong-pw")
    with pytest.raises(redis.AuthenticationError) as e:
        redisconn.connect(wrong, s).ping()
    assert refused(e.value)

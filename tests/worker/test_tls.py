"""rediss:// against a real TLS Redis (Debian's redis-server) on 127.0.0.1 that requires client
certificates and an ACL user: the project's settings connect the broker, the result backend
and the quick probe; a client without a certificate, or that does not trust the server's,
is refused. Certificates are made by openssl in a temporary folder (never committed)."""
import socket
import ssl
import subprocess
import time

import pytest
import redis

from model.errors import ConfigError
from tests.cluster.hosts import make_certs, redis_server_tls
from worker import settings
from worker.app import make_app
from worker.stack import broker_reachable

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
    while not broker_reachable(url, tls=ok):
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
    assert broker_reachable(url, tls=s.redis_tls())
    app = make_app(s)
    assert app.backend.client.ping()
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        conn.default_channel.client.ping()


def test_a_client_without_a_certificate_is_refused(tls_redis, monkeypatch):
    url, certs = tls_redis
    s = _env(monkeypatch, url, DIGITS_REDIS_CA=certs["ca"])
    assert not broker_reachable(url, tls=s.redis_tls())
    with pytest.raises(redis.ConnectionError):
        make_app(s).backend.client.ping()


def test_a_client_that_does_not_trust_the_server_is_refused(tls_redis, monkeypatch):
    url, certs = tls_redis
    s = _env(monkeypatch, url, DIGITS_REDIS_CA=certs["other_ca"], DIGITS_REDIS_CERT=certs["client_cert"],
             DIGITS_REDIS_KEY=certs["client_key"])
    assert not broker_reachable(url, tls=s.redis_tls())
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


def test_the_light_client_speaks_tls_and_acl_and_is_refused_alike(tls_redis, monkeypatch):
    """worker.lightapp (what `digits predict` sends through) with the same settings: it
    reaches broker and backend, its message lands in the broker's queue, and the clients
    the checks above refuse are refused by it too, in words the CLI knows as a refusal."""
    from worker.outage import refused
    from worker.lightapp import LightApp
    from worker.lightredis import LightRedis
    url, certs = tls_redis
    s = _env(monkeypatch, url, DIGITS_REDIS_CA=certs["ca"], DIGITS_REDIS_CERT=certs["client_cert"],
             DIGITS_REDIS_KEY=certs["client_key"])
    app = LightApp(url, s)
    assert app.broker.ping() and app.backend.client.ping() and app.backend.client is not app.broker
    app.backend.client.set("light-key", "v")
    full = make_app(s).backend.client
    assert full.get("light-key") == b"v"  # the backend is db 1, as Celery's
    app.push("predict", "digits.assemble", ("job-tls",), "job-tls")
    broker = redis.Redis.from_url(url, **s.redis_tls())
    assert b"job-tls" in broker.lpop("predict")
    for kind, files in (("certificate verify failed", dict(DIGITS_REDIS_CA=certs["other_ca"],
                                                           DIGITS_REDIS_CERT=certs["client_cert"],
                                                           DIGITS_REDIS_KEY=certs["client_key"])),
                        # no client certificate: the server's alert or its hanging up (as the TLS
                        # library and the timing have it), before any answer: a refusal
                        ("refused the TLS connection", dict(DIGITS_REDIS_CA=certs["ca"]))):
        bad = _env(monkeypatch, url, **files)
        with pytest.raises(ConnectionError, match=kind) as e:
            LightApp(url, bad).broker.ping()
        assert url.split("@")[1].split("/")[0] in str(e.value)  # names the broker's address
        assert refused(str(e.value))  # the CLI says "refused this client", not "unreachable"
    wrong = url.replace("tls-test-pw", "wrong-pw")
    with pytest.raises(ConnectionError, match="refused this client: WRONGPASS") as e:
        LightRedis.from_url(wrong, tls=s.redis_tls()).ping()
    assert refused(str(e.value))

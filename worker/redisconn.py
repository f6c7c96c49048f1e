"""The one place that makes a redis-py client for a Redis URL and the project's settings.

    r = connect("rediss://user:password@host:6379/1", settings)  # TLS options, ACL user, db
    r = connect("redis+socket:///home/.digits/redis.sock")       # the embedded stack's socket
    r = connect("/home/.digits/redis.sock", timeout=0.5)         # a socket path; a quick probe
    r = connect("sentinel://h1:26379,h2:26379/0", settings)      # the master (worker.sentinel)

Every Redis client the project makes itself comes from here; Celery makes its broker's and
result backend's clients from the same URL and settings (worker.app.celery_config). By
default a client does not retry (redis-py's default retries a refused connection for
seconds): a probe answers at once, and a polling client rides an outage out itself
(worker.outage). Workers that must live through a Redis restart pass retry=Retry(...).
"""
SOCKET_SCHEMES = ("redis+socket://", "unix://")
URL_SCHEMES = ("redis://", "rediss://") + SOCKET_SCHEMES


def is_redis_url(url):
    """True for a URL (or a unix socket path) that connect() serves."""
    text = str(url)
    return text.startswith(URL_SCHEMES) or text.startswith("/")


def connect(url, settings=None, timeout=1.0, retry=None):
    """A redis.Redis for url: redis://, rediss:// ([user:password@]host[:port][/db]; TLS
    options from settings.redis_tls()), redis+socket:// or unix:// (a socket path), or a
    bare socket path. timeout: seconds to connect and for each reply (None: wait);
    retry: a redis.retry.Retry, None for no retries. ValueError for another scheme."""
    import redis
    text = str(url)
    from worker import sentinel
    if sentinel.is_sentinel(text):  # the master the sentinels name, followed across a failover
        if settings is None:
            from worker import settings as settings_mod
            settings = settings_mod.load()
        return sentinel.connect(text, settings, timeout)
    opts = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": retry}
    for prefix in SOCKET_SCHEMES:
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    if text.startswith("/"):
        path, _, query = text.partition("?")
        db = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("virtual_host", "0")
        return redis.Redis(unix_socket_path=path, db=int(db or 0), **opts)
    if not text.startswith(("redis://", "rediss://")):
        raise ValueError(f"not a Redis URL: {url}")
    if text.startswith("rediss://"):
        opts.update(settings.redis_tls() if settings is not None else {})
    return redis.Redis.from_url(text, **opts)


def ping(url, settings=None, timeout=0.5):
    """True when the Redis at url (for sentinel:// URLs, the master its sentinels name)
    answers a PING within timeout, with no retries (a quick probe)."""
    import redis
    from worker import sentinel
    if sentinel.is_sentinel(url):
        return sentinel.reachable(url, timeout)
    try:
        client = connect(url, settings, timeout)
    except ValueError:
        return False
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()

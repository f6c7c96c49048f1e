"""The one settings module: every knob comes from an environment variable with a safe default.

    DIGITS_HOME               folder of the embedded stack and default storage (./.digits)
    DIGITS_BROKER_URL         Redis broker; unset = the embedded stack under DIGITS_HOME.
                              redis://user:password@host:6379/0 (an ACL user), or rediss://
                              for TLS
    DIGITS_RESULT_BACKEND     Redis result backend (default: the broker URL)
    DIGITS_REDIS_CA           rediss://: CA certificate file that signed the server's
                              certificate (default: the system's CAs)
    DIGITS_REDIS_CERT / DIGITS_REDIS_KEY  rediss://: client certificate and key, for a Redis
                              that requires them (tls-auth-clients)
    DIGITS_REDIS_VERIFY       rediss://: "required" (default: the server's certificate and
                              host name are checked) or "none" (not checked: testing only)
    DIGITS_STORAGE            shared storage for inputs, chunks, jobs and models: a folder or
                              any fsspec URL such as s3://bucket/prefix (default: DIGITS_HOME/storage)
    DIGITS_PREDICT_CONCURRENCY  worker processes for the predict queue (default: CPU count)
    DIGITS_TRAIN_CONCURRENCY    worker processes for the train queue (default 1)
    DIGITS_CHUNK_ROWS         CSV rows per prediction chunk (default 10000)
    DIGITS_CHUNK_IMAGES       image files per prediction chunk (default 1000)
    DIGITS_JOB_WINDOW         chunks of one job in the queue at once (default 2 x predict
                              concurrency): a later job waits behind at most this many
    DIGITS_CHUNK_RETRIES      retries of a chunk that fails as a whole (default 5)
    DIGITS_RETRY_BACKOFF      seconds before the first retry, doubled each time (default 2:
                              with 5 retries, 62 s in all, so a minute's network cut is ridden out)
    DIGITS_POISON_LIMIT       deliveries of one chunk or training job whose process died
                              (killed: out of memory?) before it is failed (default 3)
    DIGITS_CHUNK_TIME_LIMIT   seconds a chunk may run before its process is killed and the
                              chunk sent again (a frozen process; default 300, about 100 x
                              a default chunk's time)
    DIGITS_BREAKER_CHUNKS     chunks of one job failing in a row for the same storage reason
                              (disk full, permission denied) that stop the job early (default 5)
    DIGITS_VISIBILITY_TIMEOUT seconds before Redis redelivers an unacked task (default 12 h)
    DIGITS_RESULT_EXPIRES     seconds task results are kept (default 7 days)
    DIGITS_TRAIN_MAX_TASKS_PER_CHILD  recycle a training process after N jobs (default 1)
    DIGITS_FLOWER_ADDRESS / DIGITS_FLOWER_PORT  where Flower listens (127.0.0.1:5555)
    DIGITS_FLOWER_USER / DIGITS_FLOWER_PASSWORD Flower basic auth (embedded stack: generated)
    DIGITS_PROMOTE_TOLERANCE  a new version is promoted if its val_accuracy >= production's
                              minus this (default 0.0: never worse)
    DIGITS_RETRAIN_CRON       cron schedule of retraining, e.g. "0 3 * * *" (unset = none)
    DIGITS_RETRAIN_MODEL      model name the schedule retrains (default "digits")
    DIGITS_RETRAIN_DATA       training data (path or storage URL) the schedule uses
    DIGITS_RETRAIN_RECIPE     recipe of scheduled runs (default "default")
    DIGITS_WATCHDOG_INTERVAL  seconds between watchdog scans for work held by dead workers
                              (default 5; 0 = no watchdog)
    DIGITS_WATCHDOG_GRACE     a taken message younger than this is never requeued (default 10)
    DIGITS_BROKER_OUTAGE      seconds a submitting or waiting client rides out an unreachable broker (default 120)
    DIGITS_STOP_GRACE         seconds `digits up` lets workers finish their tasks on shutdown
                              before it cancels them back to the queue (default 10)
    DIGITS_RESTART_LIMIT      restarts of Redis within a minute before `digits up` gives up;
                              a worker past it is restarted every 10 s instead (default 5)
    DIGITS_WORKER_PATIENCE    seconds a worker of `digits up` may answer no ping while Redis
                              takes writes before it is replaced as hung (default 30)
    DIGITS_GC_CRON            when the scheduler removes old jobs' chunk files, uploaded
                              inputs and training states (cron or "every N[s|m|h]"; default
                              "0 4 * * *", daily at 04:00 UTC; "off" = never)
    DIGITS_GC_OLDER_THAN      age past which an ended job's leftovers go (default "7d"; s, m, h, d)
"""
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from model.errors import ConfigError


def _int(name, default):
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def _float(name, default):
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _str(name, default=None):
    raw = os.environ.get(name)
    return default if raw in (None, "") else raw


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.I)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text, what="duration"):
    """"90s", "30m", "2h", "7d", "1w" or plain seconds -> seconds (float); ConfigError otherwise."""
    m = _DURATION.match(str(text))
    if not m:
        raise ConfigError(f"{what} {text!r}: expected a number and a unit s, m, h, d or w (such as 7d)")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]


@dataclass(frozen=True)
class Settings:
    home: Path  # DIGITS_HOME
    broker_url: str | None  # None = embedded stack
    result_backend: str | None
    redis_ca: str | None  # CA file for rediss://
    redis_cert: str | None  # client certificate for rediss://
    redis_key: str | None  # its key
    redis_verify: str  # "required" or "none"
    storage: str  # folder path or fsspec URL
    predict_concurrency: int
    train_concurrency: int
    chunk_rows: int
    chunk_images: int
    job_window: int
    chunk_retries: int
    retry_backoff: float
    poison_limit: int
    chunk_time_limit: float
    breaker_chunks: int
    visibility_timeout: int
    result_expires: int
    train_max_tasks_per_child: int
    flower_address: str
    flower_port: int
    flower_user: str | None
    flower_password: str | None
    promote_tolerance: float
    retrain_cron: str | None
    retrain_model: str
    retrain_data: str | None
    retrain_recipe: str
    watchdog_interval: float  # 0 = off
    watchdog_grace: float
    broker_outage: float
    stop_grace: float
    restart_limit: int
    worker_patience: float
    gc_cron: str | None  # None = no scheduled retention
    gc_older_than: float  # seconds

    @property
    def redis_socket(self):
        """The embedded Redis's unix socket: under home, or in the temp dir when home's
        path is too long for a socket (AF_UNIX paths are limited to about 107 bytes)."""
        path = self.home / "redis.sock"
        if len(str(path)) <= 100:
            return path
        digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"digits-{digest}.sock"

    @property
    def embedded_url(self):
        """Broker and result-backend URL of the embedded Redis."""
        return f"redis+socket://{self.redis_socket}"

    def redis_tls(self):
        """redis-py's TLS options for rediss:// URLs (also Celery's broker_use_ssl and
        redis_backend_use_ssl) -> dict."""
        import ssl
        verify = self.redis_verify == "required"
        opts = {"ssl_cert_reqs": ssl.CERT_REQUIRED if verify else ssl.CERT_NONE}
        if self.redis_ca:
            opts["ssl_ca_certs"] = self.redis_ca
        if self.redis_cert:
            opts["ssl_certfile"] = self.redis_cert
        if self.redis_key:
            opts["ssl_keyfile"] = self.redis_key
        return opts

    @property
    def embedded(self):
        """True when no broker is configured and the embedded stack is used."""
        return self.broker_url is None


def redact(url):
    """A Redis URL with its password replaced by ***, for messages and logs."""
    import re
    return re.sub(r"^([a-z+]+://[^:/@]*:)[^@/]*@", r"\1***@", str(url)) if url else url


def load():
    """Settings from the environment (read anew on every call)."""
    home = Path(_str("DIGITS_HOME", ".digits")).expanduser().resolve()
    broker = _str("DIGITS_BROKER_URL")
    s = Settings(
        home=home,
        broker_url=broker,
        result_backend=_str("DIGITS_RESULT_BACKEND", broker),
        redis_ca=_str("DIGITS_REDIS_CA"),
        redis_cert=_str("DIGITS_REDIS_CERT"),
        redis_key=_str("DIGITS_REDIS_KEY"),
        redis_verify=_str("DIGITS_REDIS_VERIFY", "required"),
        storage=_str("DIGITS_STORAGE", str(home / "storage")),
        predict_concurrency=_int("DIGITS_PREDICT_CONCURRENCY", os.cpu_count() or 2),
        train_concurrency=_int("DIGITS_TRAIN_CONCURRENCY", 1),
        chunk_rows=_int("DIGITS_CHUNK_ROWS", 10000),
        chunk_images=_int("DIGITS_CHUNK_IMAGES", 1000),
        job_window=_int("DIGITS_JOB_WINDOW", 2 * _int("DIGITS_PREDICT_CONCURRENCY", os.cpu_count() or 2)),
        chunk_retries=_int("DIGITS_CHUNK_RETRIES", 5),
        retry_backoff=_float("DIGITS_RETRY_BACKOFF", 2.0),
        poison_limit=_int("DIGITS_POISON_LIMIT", 3),
        chunk_time_limit=_float("DIGITS_CHUNK_TIME_LIMIT", 300.0),
        breaker_chunks=_int("DIGITS_BREAKER_CHUNKS", 5),
        visibility_timeout=_int("DIGITS_VISIBILITY_TIMEOUT", 12 * 3600),
        result_expires=_int("DIGITS_RESULT_EXPIRES", 7 * 24 * 3600),
        train_max_tasks_per_child=_int("DIGITS_TRAIN_MAX_TASKS_PER_CHILD", 1),
        flower_address=_str("DIGITS_FLOWER_ADDRESS", "127.0.0.1"),
        flower_port=_int("DIGITS_FLOWER_PORT", 5555),
        flower_user=_str("DIGITS_FLOWER_USER"),
        flower_password=_str("DIGITS_FLOWER_PASSWORD"),
        promote_tolerance=_float("DIGITS_PROMOTE_TOLERANCE", 0.0),
        retrain_cron=_str("DIGITS_RETRAIN_CRON"),
        retrain_model=_str("DIGITS_RETRAIN_MODEL", "digits"),
        retrain_data=_str("DIGITS_RETRAIN_DATA"),
        retrain_recipe=_str("DIGITS_RETRAIN_RECIPE", "default"),
        watchdog_interval=_float("DIGITS_WATCHDOG_INTERVAL", 5.0),
        watchdog_grace=_float("DIGITS_WATCHDOG_GRACE", 10.0),
        broker_outage=_float("DIGITS_BROKER_OUTAGE", 120.0),
        stop_grace=_float("DIGITS_STOP_GRACE", 10.0),
        restart_limit=_int("DIGITS_RESTART_LIMIT", 5),
        worker_patience=_float("DIGITS_WORKER_PATIENCE", 30.0),
        gc_cron=None if _str("DIGITS_GC_CRON", "0 4 * * *").strip().lower() == "off"
        else _str("DIGITS_GC_CRON", "0 4 * * *"),
        gc_older_than=parse_duration(_str("DIGITS_GC_OLDER_THAN", "7d"), "DIGITS_GC_OLDER_THAN"),
    )
    if s.redis_verify not in ("required", "none"):
        raise ConfigError(f"DIGITS_REDIS_VERIFY={s.redis_verify!r}: use 'required' or 'none'")
    for name, path in (("DIGITS_REDIS_CA", s.redis_ca), ("DIGITS_REDIS_CERT", s.redis_cert),
                       ("DIGITS_REDIS_KEY", s.redis_key)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"{name}={path}: no such file")
    if s.chunk_rows < 1 or s.chunk_images < 1:
        raise ConfigError("DIGITS_CHUNK_ROWS and DIGITS_CHUNK_IMAGES must be >= 1")
    if s.job_window < 1 or s.chunk_retries < 0 or s.retry_backoff < 0:
        raise ConfigError("DIGITS_JOB_WINDOW must be >= 1, DIGITS_CHUNK_RETRIES and DIGITS_RETRY_BACKOFF >= 0")
    if s.poison_limit < 1 or s.chunk_time_limit <= 0 or s.breaker_chunks < 1:
        raise ConfigError("DIGITS_POISON_LIMIT and DIGITS_BREAKER_CHUNKS must be >= 1, DIGITS_CHUNK_TIME_LIMIT > 0")
    if s.predict_concurrency < 1 or s.train_concurrency < 1:
        raise ConfigError("worker concurrency must be >= 1")
    if min(s.watchdog_interval, s.watchdog_grace, s.broker_outage, s.stop_grace) < 0 or s.restart_limit < 1:
        raise ConfigError("DIGITS_WATCHDOG_*, DIGITS_BROKER_OUTAGE and DIGITS_STOP_GRACE must be >= 0, "
                          "DIGITS_RESTART_LIMIT >= 1")
    return s

"""The one settings module: every knob is an environment variable with a safe default,
declared once, as a field of Settings: its variable, how it is read, its default and its help.
load() reads them; docs/settings.md and .env.example are generated from the same fields:

    python -m worker.settings --markdown > docs/settings.md
    python -m worker.settings --env > .env.example

(tests/worker/test_settings.py checks that the committed files agree with the fields).
"""
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

from model.errors import ConfigError
from tasks.keys import TTL


def _int(name, raw):
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def _float(name, raw):
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _str(name, raw):
    return raw


def _path(name, raw):
    return Path(raw).expanduser().resolve()


def _cron(name, raw):
    """A cron schedule, or None for "off"."""
    return None if raw.strip().lower() == "off" else raw


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.I)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _duration(name, raw):
    return parse_duration(raw, name)


def parse_duration(text, what="duration"):
    """"90s", "30m", "2h", "7d", "1w" or plain seconds -> seconds (float); ConfigError otherwise."""
    m = _DURATION.match(str(text))
    if not m:
        raise ConfigError(f"{what} {text!r}: expected a number and a unit s, m, h, d or w (such as 7d)")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]


def setting(env, read, default, help, shown=None, example=None):
    """One setting's declaration, as a Settings field: env the variable, read(name, text) ->
    value, default (a value, or a function of the settings read so far, or None), help one
    line; shown: the default as the docs say it (default: the value); example: the value
    .env.example gives it for docker-compose.yml (None: not there)."""
    return field(metadata={"env": env, "read": read, "default": default, "help": help,
                           "shown": shown if shown is not None else default, "example": example})


_CPUS = os.cpu_count() or 2


@dataclass(frozen=True)
class Settings:
    home: Path = setting(
        "DIGITS_HOME", _path, ".digits", "embedded stack (socket, logs) and default storage", shown="`./.digits`")
    broker_url: str | None = setting(
        "DIGITS_BROKER_URL", _str, None, "Redis broker URL, e.g. `redis://:PASSWORD@host:6379/0`, "
        "`redis://USER:PASSWORD@host:6379/0` (an ACL user), `rediss://...` (TLS), "
        "`sentinel://[USER:PASSWORD@]h1:26379,h2:26379,h3:26379/0` (Redis Sentinel; `sentinels://` with TLS: "
        "docs/cluster.md)", shown="unset = embedded")
    result_backend: str | None = setting(
        "DIGITS_RESULT_BACKEND", _str, lambda v: v["broker_url"], "Redis URL for results", shown="the broker URL")
    redis_ca: str | None = setting(
        "DIGITS_REDIS_CA", _str, None, "`rediss://`: CA certificate file that signed Redis's certificate",
        shown="the system's CAs")
    redis_cert: str | None = setting(
        "DIGITS_REDIS_CERT", _str, None, "`rediss://`: client certificate, for a Redis with `tls-auth-clients yes`",
        shown="unset")
    redis_key: str | None = setting(
        "DIGITS_REDIS_KEY", _str, None, "`rediss://`: the client certificate's key", shown="unset")
    redis_verify: str = setting(
        "DIGITS_REDIS_VERIFY", _str, "required", "`rediss://`: `required` checks Redis's certificate and host "
        "name; `none` checks nothing (testing only)")
    sentinel_master: str = setting(
        "DIGITS_SENTINEL_MASTER", _str, "digits", "`sentinel://` URLs: the master's name in the sentinels")
    sentinel_password: str | None = setting(
        "DIGITS_SENTINEL_PASSWORD", _str, None, "`sentinel://` URLs: the sentinels' own password", shown="none")
    storage: str = setting(
        "DIGITS_STORAGE", _str, lambda v: str(v["home"] / "storage"), "shared storage for inputs, chunks, jobs "
        "and models: a folder or an fsspec URL (`s3://bucket/prefix`)", shown="$DIGITS_HOME/storage",
        example="/data/storage")
    predict_concurrency: int = setting(
        "DIGITS_PREDICT_CONCURRENCY", _int, _CPUS, "predict worker processes (embedded stack; per container "
        "with Compose)", shown="CPU count", example="2")
    train_concurrency: int = setting(
        "DIGITS_TRAIN_CONCURRENCY", _int, 1, "training worker processes")
    chunk_rows: int = setting(
        "DIGITS_CHUNK_ROWS", _int, 10000, "CSV rows per prediction chunk", example="")
    chunk_images: int = setting(
        "DIGITS_CHUNK_IMAGES", _int, 1000, "image files per prediction chunk", example="")
    job_window: int = setting(
        "DIGITS_JOB_WINDOW", _int, lambda v: 2 * v["predict_concurrency"], "chunks of one job in the queue at "
        "once: a later job waits behind at most this many", shown="2 x predict concurrency")
    chunk_retries: int = setting(
        "DIGITS_CHUNK_RETRIES", _int, 5, "retries of a chunk that fails as a whole, before the job ends PARTIAL")
    retry_backoff: float = setting(
        "DIGITS_RETRY_BACKOFF", _float, 2.0, "seconds before a chunk's first retry, doubled each time (62 s in "
        "all with the defaults: a minute's network cut is ridden out)")
    poison_limit: int = setting(
        "DIGITS_POISON_LIMIT", _int, 3, "deliveries of one chunk or training job whose process died (killed: out "
        "of memory?) before it is failed with that reason")
    chunk_time_limit: float = setting(
        "DIGITS_CHUNK_TIME_LIMIT", _float, 110.0, "seconds a chunk may run before its process is killed and the "
        "chunk sent again (a frozen process holds its job under two minutes)")
    breaker_chunks: int = setting(
        "DIGITS_BREAKER_CHUNKS", _int, 5, "chunks of one job failing in a row for the same storage reason (disk "
        "full, permission denied) that stop the job early as PARTIAL")
    visibility_timeout: int = setting(
        "DIGITS_VISIBILITY_TIMEOUT", _int, 12 * 3600, "seconds before kombu itself redelivers an unacknowledged "
        "task; longer than the longest training run (the watchdog acts long before)", example="")
    result_expires: int = setting(
        "DIGITS_RESULT_EXPIRES", _int, TTL, "seconds task results and the job's Redis keys are kept", example="")
    train_max_tasks_per_child: int = setting(
        "DIGITS_TRAIN_MAX_TASKS_PER_CHILD", _int, 1, "recycle a training process after this many jobs")
    flower_address: str = setting(
        "DIGITS_FLOWER_ADDRESS", _str, "127.0.0.1", "where Flower listens: address")
    flower_port: int = setting(
        "DIGITS_FLOWER_PORT", _int, 5555, "where Flower listens: port")
    flower_user: str | None = setting(
        "DIGITS_FLOWER_USER", _str, None, "Flower basic auth: user (Flower 2 refuses its API without auth)",
        shown="generated by `digits up`", example="admin")
    flower_password: str | None = setting(
        "DIGITS_FLOWER_PASSWORD", _str, None, "Flower basic auth: password", shown="generated by `digits up`",
        example="change-me-too")
    promote_tolerance: float = setting(
        "DIGITS_PROMOTE_TOLERANCE", _float, 0.0, "a new version is promoted if its val_accuracy >= "
        "production's minus this (0: never worse)", example="")
    retrain_cron: str | None = setting(
        "DIGITS_RETRAIN_CRON", _str, None, "cron schedule of retraining in UTC, e.g. `0 3 * * *`, or "
        "`every 30m`", shown="unset = none", example="")
    retrain_model: str = setting(
        "DIGITS_RETRAIN_MODEL", _str, "digits", "model name the schedule retrains", example="digits")
    retrain_data: str | None = setting(
        "DIGITS_RETRAIN_DATA", _str, None, "training data (path or storage URL the workers can read) the "
        "schedule uses, e.g. /data/storage/inputs/train.csv", shown="unset", example="")
    retrain_recipe: str = setting(
        "DIGITS_RETRAIN_RECIPE", _str, "default", "recipe of scheduled runs", example="default")
    watchdog_interval: float = setting(
        "DIGITS_WATCHDOG_INTERVAL", _float, 5.0, "seconds between watchdog scans for work held by dead workers "
        "(0 = no watchdog)")
    watchdog_grace: float = setting(
        "DIGITS_WATCHDOG_GRACE", _float, 10.0, "a message taken from a queue less than this many seconds ago is "
        "never requeued")
    broker_outage: float = setting(
        "DIGITS_BROKER_OUTAGE", _float, 120.0, "seconds a submitting or waiting client, and a task's Redis "
        "commands, ride out an unreachable broker")
    stop_grace: float = setting(
        "DIGITS_STOP_GRACE", _float, 10.0, "on shutdown, seconds workers may finish running tasks before these "
        "are sent back to the queue")
    restart_limit: int = setting(
        "DIGITS_RESTART_LIMIT", _int, 5, "restarts of Redis within a minute before `digits up` gives up; a "
        "worker past it is restarted every 10 s instead")
    worker_patience: float = setting(
        "DIGITS_WORKER_PATIENCE", _float, 30.0, "seconds a worker of `digits up` may answer no ping while Redis "
        "takes writes before it is replaced as hung")
    gc_cron: str | None = setting(
        "DIGITS_GC_CRON", _cron, "0 4 * * *", "when the scheduler runs retention (`digits.gc`): cron in UTC or "
        "`every N[s|m|h]`; `off` = never")
    gc_older_than: float = setting(
        "DIGITS_GC_OLDER_THAN", _duration, "7d", "age (since a job ended) past which `digits.gc` removes its "
        "chunk files, uploaded inputs and training state (`s`, `m`, `h`, `d`, `w`)")

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
    return re.sub(r"([a-z+]+://[^:/@;,]*:)[^@/;]*@", r"\1***@", str(url)) if url else url


def declarations():
    """Every setting's declaration -> [(Settings field name, metadata dict)], in field order."""
    return [(f.name, f.metadata) for f in fields(Settings)]


def load():
    """Settings from the environment (read anew on every call); ConfigError for a bad value."""
    values = {}
    for name, d in declarations():
        raw = os.environ.get(d["env"])
        if raw in (None, ""):
            default = d["default"]
            raw = default(values) if callable(default) else default
            # a default given as text is read as the variable would be ("7d", "0 4 * * *", ".digits")
            values[name] = d["read"](d["env"], raw) if isinstance(raw, str) and d["read"] is not _str else raw
        else:
            values[name] = d["read"](d["env"], raw)
    s = Settings(**values)
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


# ------------------------------------------------------------------ generated documents

# docker-compose.yml's own variables (not settings of the application), for .env.example
COMPOSE_VARIABLES = (
    ("REDIS_PASSWORD", "change-me-long-random", "Required: Redis's password. It goes into redis:// URLs, so use "
     "URL-safe characters only, e.g. the output of\n#   python -c \"import secrets; print(secrets.token_hex(32))\""),
    ("REDIS_MAXMEMORY", "0", "Memory cap of Redis, e.g. 2gb; 0 = no cap. The policy is noeviction: when full, "
     "Redis refuses new tasks instead of silently dropping queued ones."),
    ("REDIS_SCHEME", "redis", "How workers, the scheduler, Flower and clients reach Redis. Plain Redis (the "
     "default): REDIS_SCHEME=redis and REDIS_HOSTS=redis:6379.\n# Redis Sentinel (`docker compose --profile "
     "sentinel up -d`, docs/cluster.md):\n#   REDIS_SCHEME=sentinel and "
     "REDIS_HOSTS=sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"),
    ("REDIS_HOSTS", "redis:6379", "Redis's host:port, or the sentinels' (see REDIS_SCHEME)."),
    ("SENTINEL_DOWN_AFTER_MS", "5000", "Sentinel profile: milliseconds of silence after which a sentinel thinks "
     "the master is down (the failover starts about one second after the quorum agrees)."),
    ("FLOWER_PORT", "5555", "Host port of Flower, bound to 127.0.0.1 only; put a TLS reverse proxy in front "
     "to expose it."),
    ("DIGITS_IMAGE", "digits-queue:latest", "Tag of the image built from deploy/Dockerfile (or pulled from "
     "your registry)."),
)


def _shown(d):
    """The default as the docs table shows it: a value in code style, a description as text."""
    default, shown = d["default"], d["shown"]
    literal = shown is default and default is not None and not callable(default)  # no `shown` given
    return f"`{shown}`" if literal else shown or "unset"


def markdown():
    """docs/settings.md: one table row per setting -> str."""
    lines = ["# Settings", "",
             "<!-- generated by `python -m worker.settings --markdown > docs/settings.md`; edit worker/settings.py -->",
             "", "Every knob is an environment variable with a safe default, declared once in "
             "`worker/settings.py`. Empty counts as unset.", "",
             "| variable | default | meaning |", "|---|---|---|"]
    for _, d in declarations():
        cells = (f"`{d['env']}`", _shown(d), d["help"])
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def env_example():
    """.env.example for docker-compose.yml: its own variables, then the settings it passes on -> str."""
    out = ["# Configuration of docker-compose.yml. Copy to .env and replace every placeholder:",
           "#   cp .env.example .env",
           "# .env holds secrets: never commit it. Placeholders below are NOT secrets.",
           "# Generated by `python -m worker.settings --env > .env.example`; edit worker/settings.py.", "",
           "# --- docker-compose.yml's own variables ---"]
    for name, value, help in COMPOSE_VARIABLES:
        out += [f"# {help}", f"{name}={value}"]
    out += ["", "# --- settings passed to the services (empty = the default; docs/settings.md) ---"]
    for _, d in declarations():
        if d["example"] is not None:
            default = "" if d["shown"] is None else f" (default: {d['shown']})"
            out += [f"# {d['help']}{default}".replace("`", ""), f"{d['env']}={d['example']}"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import sys
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(markdown())
    elif sys.argv[1:] == ["--env"]:
        sys.stdout.write(env_example())
    else:
        sys.exit("usage: python -m worker.settings --markdown | --env")

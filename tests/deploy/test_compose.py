"""The deployment files: docker-compose.yml (as Compose itself resolves it), deploy/Dockerfile,
.env.example, and the commands the compose file runs.

Needs Compose: `docker-compose` (Debian's package, as in CI) or the `docker compose` plugin.
`docker-compose config` needs no Docker daemon. Without either, these tests are skipped with
a reason, unless DIGITS_REQUIRE_COMPOSE=1 (set by .ci/run, which installs docker-compose):
then a missing Compose is a failure.
"""
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SHARED_MOUNT = "/data"

# Variables that must not leak from the caller's shell into the interpolation under test.
_COMPOSE_VARS = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


# --------------------------------------------------------------------------------------
# Running Compose
# --------------------------------------------------------------------------------------

def _compose_command():
    """(argv prefix, is_v2) of the Compose CLI found here; fail when there is none."""
    if shutil.which("docker-compose"):
        return ["docker-compose"], False
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"], True
    message = ("Docker Compose is not installed: install `docker-compose` "
               "(apt-get install -y docker-compose) or the `docker compose` plugin")
    if os.environ.get("DIGITS_REQUIRE_COMPOSE") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _compose_vars():
    return set(_COMPOSE_VARS.findall(COMPOSE_FILE.read_text()))


def _clean_env():
    """The caller's environment without the variables the compose file interpolates."""
    env = {k: v for k, v in os.environ.items() if k not in _compose_vars()}
    env.pop("COMPOSE_FILE", None)
    env.pop("COMPOSE_PROJECT_NAME", None)
    return env


def _run_config(env_file):
    argv, v2 = _compose_command()
    cmd = [*argv, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config"]
    if v2:
        cmd += ["--format", "json"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=120)
    return cmd, v2, proc


def _parse(text, is_json):
    if is_json:
        return json.loads(text)
    try:
        import yaml
    except ImportError:
        pytest.fail("PyYAML is needed to read `docker-compose config` output: pip install pyyaml")
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def config():
    cmd, v2, proc = _run_config(ENV_EXAMPLE)
    assert proc.returncode == 0, f"{shlex.join(cmd)} failed:\n{proc.stderr}"
    cfg = _parse(proc.stdout, v2)
    assert isinstance(cfg, dict) and cfg.get("services"), f"no services in:\n{proc.stdout}"
    return cfg


# --------------------------------------------------------------------------------------
# Normalizing the two Compose generations' output
# --------------------------------------------------------------------------------------

def _words(value):
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _env(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def _ports(service):
    """[(host_ip, published, target)] of a service's published ports."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((port.get("host_ip") or "", str(port.get("published") or ""), str(port["target"])))
            continue
        spec = str(port).split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            out.append(("", parts[0], parts[1]))
        else:
            out.append(("", "", parts[0]))  # container port only: published on a random port
    return out


def _mounts(service):
    """[(source, target)] of a service's volumes."""
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            out.append((vol.get("source") or "", vol["target"]))
        else:
            parts = str(vol).split(":")
            out.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
    return out


def _healthcheck_text(service):
    test = (service.get("healthcheck") or {}).get("test")
    if test is None:
        return ""
    return test if isinstance(test, str) else " ".join(str(t) for t in test)


def _seconds(duration):
    """Compose duration ('60s', '1m30s', '10m', '1h', or a number of seconds)."""
    if isinstance(duration, (int, float)) or re.fullmatch(r"[0-9.]+", str(duration)):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    total, pos = 0.0, 0
    for m in re.finditer(r"([0-9.]+)(ms|us|h|m|s)", str(duration)):
        assert m.start() == pos, f"bad duration {duration!r}"
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    assert pos == len(str(duration)) and pos, f"bad duration {duration!r}"
    return total


def _app_services(cfg):
    return {name: s for name, s in cfg["services"].items() if "build" in s}


def _services_running(cfg, *words):
    return {
        name: s for name, s in _app_services(cfg).items()
        if _words(s.get("command"))[: len(words)] == list(words)
    }


# --------------------------------------------------------------------------------------
# The compose file
# --------------------------------------------------------------------------------------

SENTINEL_PROFILE = {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}


def test_env_example_defines_every_variable_the_compose_file_uses():
    defined = {
        line.split("=", 1)[0].strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    missing = sorted(_compose_vars() - defined)
    assert not missing, f".env.example lacks {missing}"


def test_secrets_are_required_not_defaulted(tmp_path):
    text = COMPOSE_FILE.read_text()
    for var in ("REDIS_PASSWORD", "DIGITS_FLOWER_USER", "DIGITS_FLOWER_PASSWORD"):
        assert re.search(r"\$\{" + var + r":\?", text), f"{var} must be required with ${{{var}:?message}}"
        env_file = tmp_path / f"without-{var}.env"
        env_file.write_text(
            "\n".join(l for l in ENV_EXAMPLE.read_text().splitlines() if not l.startswith(var + "="))
        )
        cmd, _, proc = _run_config(env_file)
        assert proc.returncode != 0, f"{shlex.join(cmd)} accepted a missing {var}"
        assert var in proc.stderr + proc.stdout


def test_redis_requires_a_password_and_is_not_published(config):
    redis = config["services"]["redis"]
    assert str(redis["image"]).startswith("redis:7")
    cmd = _words(redis.get("command"))
    assert "--requirepass" in cmd
    password = cmd[cmd.index("--requirepass") + 1]
    assert password and not password.startswith("--")
    for host_ip, published, target in _ports(redis):
        assert host_ip == "127.0.0.1", f"redis port {target} published on {host_ip or '0.0.0.0'}"
    # Broker persistence: no lost tasks on restart, no evicted tasks when memory is full.
    joined = " ".join(cmd)
    assert "--appendonly yes" in joined
    assert "--maxmemory-policy noeviction" in joined
    assert "ping" in _healthcheck_text(redis)
    assert any(target == "/data" for _, target in _mounts(redis)), "redis /data needs a volume"


def test_every_app_service_runs_the_one_image(config):
    apps = _app_services(config)
    assert set(apps) >= {"worker-predict", "worker-train", "scheduler", "flower"}
    others = set(config["services"]) - set(apps) - SENTINEL_PROFILE
    assert others == {"redis"}, "only redis (and the sentinel profile's Redis) may use another image"
    builds = {json.dumps(s["build"], sort_keys=True) for s in apps.values()}
    images = {s.get("image") for s in apps.values()}
    assert len(builds) == 1 and len(images) == 1, (builds, images)
    build = next(iter(apps.values()))["build"]
    assert Path(build["context"]).resolve() == ROOT
    assert build["dockerfile"] == "deploy/Dockerfile"


def test_app_services_share_the_volume_and_wait_for_redis(config):
    for name, s in _app_services(config).items():
        env = _env(s)
        mounts = dict((t, src) for src, t in _mounts(s))
        assert SHARED_MOUNT in mounts, f"{name} does not mount {SHARED_MOUNT}"
        assert mounts[SHARED_MOUNT] in config.get("volumes", {}), f"{name}: /data is not a named volume"
        assert env.get("DIGITS_STORAGE", "").startswith(SHARED_MOUNT + "/"), name
        assert env.get("DIGITS_HOME", "").startswith(SHARED_MOUNT + "/"), name
        assert env.get("DIGITS_BROKER_URL", "").startswith("redis://:"), name
        assert "@redis:6379/" in env["DIGITS_BROKER_URL"], name
        assert "@redis:6379/" in env.get("DIGITS_RESULT_BACKEND", ""), name
        depends = s.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        assert depends.get("redis", {}).get("condition") == "service_healthy", name
    mounts_by_service = {
        name: dict((t, src) for src, t in _mounts(s)) for name, s in _app_services(config).items()
    }
    assert len({m[SHARED_MOUNT] for m in mounts_by_service.values()}) == 1, "one shared volume"


def test_workers_are_scalable_healthy_and_stop_gracefully(config):
    workers = _services_running(config, "digits", "worker")
    assert set(workers) == {"worker-predict", "worker-train"}
    min_grace = {"worker-predict": 30, "worker-train": 300}
    for name, s in workers.items():
        assert "container_name" not in s, f"{name} cannot scale with a container_name"
        for host_ip, published, target in _ports(s):
            assert not published, f"{name} publishes a fixed host port {published}"
        hc = _healthcheck_text(s)
        assert "celery -A worker.app inspect ping" in hc, name
        assert "HOSTNAME" in hc, f"{name}: healthcheck must ping this container's node only"
        assert s.get("stop_signal", "SIGTERM") == "SIGTERM", name
        assert _seconds(s.get("stop_grace_period", "10s")) >= min_grace[name], name

    predict = _words(workers["worker-predict"]["command"])
    assert predict[predict.index("--queues") + 1] == "predict"
    train = _words(workers["worker-train"]["command"])
    assert train[train.index("--queues") + 1] == "train"
    assert train[train.index("--concurrency") + 1] == "1"
    assert train[train.index("--max-tasks-per-child") + 1] == "1"
    for var in ("DIGITS_RETRAIN_CRON", "DIGITS_RETRAIN_MODEL", "DIGITS_RETRAIN_DATA", "DIGITS_RETRAIN_RECIPE"):
        assert var in _env(workers["worker-train"]), var


def test_exactly_one_scheduler(config):
    schedulers = _services_running(config, "digits", "scheduler")
    assert list(schedulers) == ["scheduler"]
    s = schedulers["scheduler"]
    assert (s.get("deploy") or {}).get("replicas", 1) == 1
    block = re.search(r"^  scheduler:\n(.*?)(?=^  \S|^\S|\Z)", COMPOSE_FILE.read_text(), re.M | re.S)
    assert block, "no scheduler service block"
    comments = [l for l in block.group(1).splitlines() if l.strip().startswith("#")]
    assert any("scale" in l.lower() and "not" in l.lower() for l in comments), \
        "say next to the scheduler that it must not be scaled"
    env = _env(s)
    for var in ("DIGITS_RETRAIN_CRON", "DIGITS_RETRAIN_MODEL", "DIGITS_RETRAIN_DATA", "DIGITS_RETRAIN_RECIPE"):
        assert var in env, var


def test_flower_has_auth_persistence_healthcheck_and_a_local_port(config):
    flowers = _services_running(config, "digits", "flower")
    assert list(flowers) == ["flower"]
    f = flowers["flower"]
    env = _env(f)
    assert env.get("DIGITS_FLOWER_USER") and env.get("DIGITS_FLOWER_PASSWORD")
    assert env.get("DIGITS_FLOWER_ADDRESS") == "0.0.0.0"
    assert env.get("FLOWER_PERSISTENT", "").lower() in ("true", "1", "yes")
    db = env.get("FLOWER_DB", "")
    targets = [t for _, t in _mounts(f)]
    assert targets and any(db.startswith(t.rstrip("/") + "/") for t in targets), \
        f"FLOWER_DB={db!r} is not on a volume {targets}"
    assert "/healthcheck" in _healthcheck_text(f)
    hc = _healthcheck_words(f)
    if hc[:2] == ["python", "-c"]:
        compile(hc[2], "<flower healthcheck>", "exec")
    ports = _ports(f)
    assert ports, "flower publishes no port"
    for host_ip, published, target in ports:
        assert host_ip == "127.0.0.1", f"flower published on {host_ip or '0.0.0.0'}"
        assert target == env.get("DIGITS_FLOWER_PORT", "5555")


# --------------------------------------------------------------------------------------
# The Dockerfile
# --------------------------------------------------------------------------------------

def _instructions(path):
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def test_dockerfile_layers_dependencies_before_source_and_drops_root():
    ins = _instructions(DOCKERFILE)
    assert ins[0][0] == "FROM" and ins[0][1].startswith("python:3.11")
    idx = lambda pred: next((i for i, x in enumerate(ins) if pred(*x)), None)  # noqa: E731

    meta = ["pyproject.toml", "deploy/constraints.txt"]
    copy_meta = idx(lambda k, a: k == "COPY" and a.split()[:-1] == meta)
    assert copy_meta is not None, "copy pyproject.toml and the constraints alone first"
    deps = idx(lambda k, a: k == "RUN" and "pip install" in a and "--no-deps" not in a)
    source = idx(lambda k, a: k == "COPY" and a.split()[:-1] != meta)
    project = idx(lambda k, a: k == "RUN" and "pip install" in a and "--no-deps" in a)
    assert None not in (deps, source, project), ins
    assert copy_meta < deps < source < project, "dependency layer must come before the source COPY"

    users = [i for i, (k, _) in enumerate(ins) if k == "USER"]
    assert users, "no USER line"
    last_user = ins[users[-1]][1]
    assert last_user not in ("root", "0") and not last_user.startswith(("root:", "0:"))
    last_install = max(i for i, (k, a) in enumerate(ins) if k == "RUN")
    assert users[-1] > last_install, "USER must come after the installs"
    assert ins[-1][0] == "CMD"


def test_dockerignore_keeps_artefacts_out_of_the_context():
    lines = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [l for l in lines if l and not l.startswith("#")]
    assert "*" in patterns or ".git" in patterns
    assert any("__pycache__" in p for p in patterns)
    assert "*" in patterns or any(".digits" in p for p in patterns)


# --------------------------------------------------------------------------------------
# The commands the compose file runs exist
# --------------------------------------------------------------------------------------

def _help_command(words):
    """The command words up to the first option, plus --help. Celery's `-A APP` is kept and the
    subcommand taken, since its subcommands need the app: `celery -A worker.app inspect --help`."""
    if words and words[0] == "celery":
        out, rest = ["celery"], list(words[1:])
        while rest[:1] in (["-A"], ["--app"]):
            out, rest = out + rest[:2], rest[2:]
        return out + rest[:1] + ["--help"]
    return list(itertools.takewhile(lambda w: not w.startswith("-"), words)) + ["--help"]


def _healthcheck_words(service):
    test = (service.get("healthcheck") or {}).get("test")
    if not test:
        return []
    if isinstance(test, str):
        return shlex.split(test)
    if test[0] == "CMD-SHELL":
        return shlex.split(test[1])
    return [str(t) for t in (test[1:] if test[0] == "CMD" else test)]


def _commands(cfg):
    """{help argv: (service, its environment)} for every command and celery healthcheck."""
    commands = {}
    for name, s in _app_services(cfg).items():
        commands.setdefault(tuple(_help_command(_words(s.get("command")))), (name, _env(s)))
        hc = _healthcheck_words(s)
        if hc[:1] == ["celery"]:
            commands.setdefault(tuple(_help_command(hc)), (name, _env(s)))
    return commands


HELP_COMMANDS = [
    ("digits", "worker", "--help"),
    ("digits", "scheduler", "--help"),
    ("digits", "flower", "--help"),
    ("celery", "-A", "worker.app", "inspect", "--help"),
]


def test_help_commands_cover_everything_the_compose_file_runs(config):
    assert sorted(_commands(config)) == sorted(HELP_COMMANDS)


@pytest.mark.parametrize("argv", HELP_COMMANDS, ids=lambda a: " ".join(a[:-1]))
def test_command_the_compose_file_runs_exists(config, tmp_path, argv):
    """Runs `ARGV --help` with the environment of the service that runs it; exit code 0."""
    name, service_env = _commands(config)[argv]
    env = dict(os.environ)
    env.update(service_env)
    # Keep the container's /data paths off this machine.
    env.update({k: str(tmp_path / k.lower()) for k in ("DIGITS_HOME", "DIGITS_STORAGE", "FLOWER_DB")
                if k in env})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if shutil.which(argv[0], path=env.get("PATH")) is None:
        pytest.fail(f"{argv[0]} is not on PATH: install the package (pip install -e .)")
    proc = subprocess.run(list(argv), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        f"[{name}] {shlex.join(argv)} exited {proc.returncode}:\n{proc.stderr or proc.stdout}"
    )


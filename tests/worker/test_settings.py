"""worker/settings.py declares each setting once; docs/settings.md and .env.example are
generated from the declarations and must agree with them as committed."""
import dataclasses
import re
from pathlib import Path

import pytest

from model.errors import ConfigError
from worker import settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_settings_page_is_generated_from_the_declarations():
    assert (ROOT / "docs" / "settings.md").read_text() == settings.markdown(), \
        "regenerate: python -m worker.settings --markdown > docs/settings.md"


def test_the_committed_env_example_is_generated_from_the_declarations():
    assert (ROOT / ".env.example").read_text() == settings.env_example(), \
        "regenerate: python -m worker.settings --env > .env.example"


def test_every_field_is_declared_once_with_a_variable_and_help():
    decls = settings.declarations()
    assert [name for name, _ in decls] == [f.name for f in dataclasses.fields(settings.Settings)]
    envs = [d["env"] for _, d in decls]
    assert len(envs) == len(set(envs))
    for name, d in decls:
        assert re.fullmatch(r"DIGITS_[A-Z_]+", d["env"]) and d["help"].strip(), name
        assert f"`{d['env']}`" in settings.markdown()


def test_env_example_sets_only_what_docker_compose_reads():
    compose = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", compose))
    set_here = set(re.findall(r"^([A-Z_]+)=", settings.env_example(), re.M))
    assert set_here <= used, set_here - used


def test_each_variable_reaches_its_field(monkeypatch):
    for name, d in settings.declarations():
        monkeypatch.delenv(d["env"], raising=False)
    values = {"DIGITS_CHUNK_ROWS": ("123", 123), "DIGITS_RETRY_BACKOFF": ("0.5", 0.5),
              "DIGITS_GC_OLDER_THAN": ("2h", 7200.0), "DIGITS_GC_CRON": ("off", None),
              "DIGITS_BROKER_URL": ("redis://h:1/0", "redis://h:1/0"), "DIGITS_PREDICT_CONCURRENCY": ("3", 3)}
    for env, (raw, _) in values.items():
        monkeypatch.setenv(env, raw)
    s = settings.load()
    by_env = {d["env"]: name for name, d in settings.declarations()}
    for env, (_, want) in values.items():
        assert getattr(s, by_env[env]) == want, env
    assert s.result_backend == "redis://h:1/0" and s.job_window == 6  # defaults derived from other settings
    monkeypatch.setenv("DIGITS_CHUNK_IMAGES", "many")
    with pytest.raises(ConfigError, match="DIGITS_CHUNK_IMAGES='many' is not an integer"):
        settings.load()


def test_defaults(monkeypatch, tmp_path):
    for name, d in settings.declarations():
        monkeypatch.delenv(d["env"], raising=False)
    monkeypatch.chdir(tmp_path)
    s = settings.load()
    assert s.home == tmp_path.resolve() / ".digits" and s.storage == str(s.home / "storage")
    assert s.result_expires == 7 * 86400 and s.gc_cron == "0 4 * * *" and s.gc_older_than == 7 * 86400
    assert s.broker_url is None and s.embedded

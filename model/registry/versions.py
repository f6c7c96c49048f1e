"""Model registry on shared storage: numbered versions per model name, plus movable aliases.

Layout under a storage root (a folder path or fsspec URL such as memory://x or s3://b/p):

    models/<name>/<version>/model.npz        the model file (checkpoint.save_model)
    models/<name>/<version>/metadata.json    name, version, recipe, config, data_fingerprint,
                                             data_source, metrics, history, confusion, job_id,
                                             created_at, model_version (weights hash),
                                             promotion {decision}, report ("report.html" or null)
    models/<name>/<version>/report.html      training report (model.registry.report)
    models/<name>/aliases/<alias>.json       {"version", "updated_at", "reason", "previous"}

Versions are "1", "2", ... A version exists once its metadata.json exists; a folder without
one is a registration that is in progress or crashed, and is skipped (its number is not
reused). Every file is written atomically (model.storage), so readers never see half a file.
"latest" follows the newest registration; "production" is what bare-name references use and
moves only through the promotion gate in register() or an explicit promote().
"""
import dataclasses
import json
import math
import os
import re

import numpy as np

from model import checkpoint, storage
from model.errors import RegistryError
from model.registry import report

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
MODEL_FILE, META_FILE, REPORT_FILE = "model.npz", "metadata.json", "report.html"
PRODUCTION, LATEST = "production", "latest"


def _check_name(value, what="model name"):
    value = str(value)
    if not NAME_RE.match(value) or value in (".", ".."):
        raise RegistryError(f"bad {what} {value!r}: use letters, digits, '_', '.' and '-'")
    return value


def _plain(x):
    """x made strictly JSON-serializable: numpy -> Python, dataclasses -> dicts, NaN/inf -> None."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        x = dataclasses.asdict(x)
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _dump(obj):
    return json.dumps(_plain(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


class Registry:
    """The model registry under one storage root (folder path or fsspec URL)."""

    def __init__(self, root):
        self.root = str(root)
        self.models = storage.join(self.root, "models")

    def __repr__(self):
        return f"Registry({self.root!r})"

    # paths
    def _model_dir(self, name):
        return storage.join(self.models, _check_name(name))

    def _version_dir(self, name, version):
        return storage.join(self._model_dir(name), str(version))

    def _alias_file(self, name, alias):
        return storage.join(self._model_dir(name), "aliases", _check_name(alias, "alias") + ".json")

    # reading
    def names(self):
        """Names of the registered models (those with at least one version), sorted."""
        def has_version(n):
            base = self._model_dir(n)
            return any(v.isdigit() and storage.exists(storage.join(base, v, META_FILE))
                       for v in storage.listdir(base))
        return [n for n in storage.listdir(self.models) if NAME_RE.match(n) and has_version(n)]

    def _numbers(self, name, complete=True):
        """Version numbers (ints, ascending) of a model; complete=True: only those with metadata."""
        base = self._model_dir(name)
        nums = sorted(int(v) for v in storage.listdir(base) if v.isdigit())
        if complete:
            nums = [n for n in nums if storage.exists(storage.join(base, str(n), META_FILE))]
        return nums

    def metadata(self, name, version):
        """The metadata dict of one version; RegistryError if it does not exist."""
        ref = storage.join(self._version_dir(name, version), META_FILE)
        try:
            return json.loads(storage.read_text(ref))
        except FileNotFoundError:
            raise RegistryError(self._unknown_version(name, version)) from None

    def aliases(self, name):
        """{alias: version} of one model ({} when it has none)."""
        folder = storage.join(self._model_dir(name), "aliases")
        out = {}
        for f in storage.listdir(folder):
            if f.endswith(".json") and not f.startswith("."):
                try:
                    out[f[:-5]] = str(json.loads(storage.read_text(storage.join(folder, f)))["version"])
                except (FileNotFoundError, ValueError, KeyError, TypeError):
                    continue  # removed meanwhile, or not an alias record
        return out

    def alias_record(self, name, alias):
        """The alias file's content {"version", "updated_at", "reason", "previous"}, or None."""
        try:
            return json.loads(storage.read_text(self._alias_file(name, alias)))
        except FileNotFoundError:
            return None

    def _info(self, name, version, aliases=None):
        meta = self.metadata(name, version)
        aliases = self.aliases(name) if aliases is None else aliases
        path = self._version_dir(name, version)
        meta["aliases"] = sorted(a for a, v in aliases.items() if v == str(version))
        meta["path"] = path
        meta["model"] = storage.join(path, MODEL_FILE)
        meta["report"] = storage.join(path, meta["report"]) if meta.get("report") else None
        return meta

    def versions(self, name=None):
        """Metadata of every version of one model (or of all models), sorted by name then version.

        Each dict is metadata.json plus "aliases" (list of alias names pointing at it),
        "path" (version folder), "model" (model file) and "report" (report file or None).
        """
        names = [_check_name(name)] if name is not None else self.names()
        out = []
        for n in names:
            aliases = self.aliases(n)
            out += [self._info(n, v, aliases) for v in self._numbers(n)]
        return out

    # writing
    def _reserve(self, name):
        """Claim the next version number of a model and return it as a string.

        On a local folder os.mkdir is the claim: it is atomic, so two registrations never
        get the same number (on FileExistsError the next number is tried). Object stores have
        no atomic create-if-absent here, so the claim is check-then-write of a ".reserved"
        marker: two writers racing within that window could pick the same number. The
        training job holds a per-model lock, which keeps registrations of one name serial.
        """
        base = self._model_dir(name)
        n = max(self._numbers(name, complete=False), default=0) + 1
        local = storage.local_path(base)
        if local is not None:
            os.makedirs(local, exist_ok=True)
            while True:
                try:
                    os.mkdir(os.path.join(local, str(n)))
                    return str(n)
                except FileExistsError:
                    n += 1
        while storage.exists(storage.join(base, str(n))):
            n += 1
        storage.write_text(storage.join(base, str(n), ".reserved"), checkpoint.now() + "\n")
        return str(n)

    def set_alias(self, name, alias, version, reason=""):
        """Point an alias of a model at an existing version (atomic write); returns the record."""
        version = str(version)
        self.metadata(name, version)  # raises if the version does not exist
        old = self.alias_record(name, alias)
        record = {"version": version, "updated_at": checkpoint.now(), "reason": reason,
                  "previous": old.get("version") if old else None}
        storage.write_text(self._alias_file(name, alias), _dump(record))
        return record

    def promote(self, name, version, reason="manual"):
        """Make a version the model's production version; returns the alias record."""
        return self.set_alias(name, PRODUCTION, version, reason)

    def _gate(self, name, val_accuracy, tolerance):
        """The promotion decision for a new version with this val_accuracy (a dict)."""
        prod = self.aliases(name).get(PRODUCTION)
        prev_acc = None
        if prod:
            prev_acc = report.finite_or_none(self.metadata(name, prod).get("metrics", {}).get("val_accuracy"))
        acc = report.finite_or_none(val_accuracy)
        decision = {"promoted": False, "alias": PRODUCTION, "val_accuracy": acc, "tolerance": tolerance,
                    "previous_version": prod, "previous_val_accuracy": prev_acc, "decided_at": checkpoint.now()}
        if prod is None:
            decision.update(promoted=True, reason="first version: no production model yet")
        elif acc is None:
            decision["reason"] = f"no val_accuracy; production stays at version {prod}"
        elif prev_acc is None:
            decision.update(promoted=True, reason=f"production version {prod} has no val_accuracy")
        elif acc >= prev_acc - tolerance:
            decision.update(promoted=True, reason=f"val_accuracy {acc:.4f} >= production version {prod} "
                                                  f"{prev_acc:.4f} - tolerance {tolerance:g}")
        else:
            decision["reason"] = (f"val_accuracy {acc:.4f} < production version {prod} {prev_acc:.4f} "
                                  f"- tolerance {tolerance:g}; production stays at version {prod}")
        return decision

    def offer(self, name, version, tolerance=0.0, why="offered"):
        """Put a registered version through the promotion gate (a sweep's best, once the
        sweep ended) -> the decision, also recorded in its metadata under "promotion"."""
        meta = self.metadata(name, version)
        decision = self._gate(name, meta.get("metrics", {}).get("val_accuracy"), float(tolerance))
        decision["reason"] = f"{why}: {decision['reason']}"
        meta["promotion"] = decision
        storage.write_text(storage.join(self._version_dir(name, version), META_FILE), _dump(meta))
        if decision["promoted"]:
            self.promote(name, version, reason="gate: " + decision["reason"])
        return decision

    def register_trained(self, name, model, trainer, *, job_id, tolerance=0.0, gate=True):
        """register() a checkpoint.trained_model of `trainer`: metrics, history, config and
        data from the model's metadata, the confusion matrix from the validation split."""
        from model.inference import confusion_matrix
        y_val, pred = trainer.validation()
        m = model.meta
        return self.register(name, model, metrics=m["metrics"], history=m["history"], config=m["config"],
                             recipe=m["recipe"], data_fingerprint=m["data_fingerprint"],
                             data_source=m["data_source"], job_id=job_id,
                             confusion=confusion_matrix(y_val, pred).tolist(), tolerance=tolerance, gate=gate)

    def register(self, name, model, *, metrics, history, config, recipe, data_fingerprint,
                 data_source, job_id, confusion=None, tolerance=0.0, gate=True):
        """Store a trained checkpoint.Model as the next version of `name`; returns its entry.

        The entry is metadata.json plus "aliases", "path", "model" and "report" (full paths),
        as in versions().

        metrics: {"val_accuracy", "val_loss", ...}; history: per-epoch dicts or EpochMetrics;
        config: the TrainConfig dict; confusion: (10, 10) validation counts or None.
        Writes model.npz and metadata.json, decides the promotion gate (the version becomes
        "production" if there is none yet or its val_accuracy >= production's - tolerance),
        writes report.html (when history is non-empty), rewrites metadata.json with the
        decision {promoted, reason, previous_version, previous_val_accuracy, tolerance, ...}
        under "promotion", then moves "latest" to the version and, if promoted, "production".
        Aliases move last, so whatever they point at is complete. A job that registers again
        (a delivery repeated after a crash) gets its earlier version back, finished if the
        earlier attempt stopped half-way, instead of a second version. gate=False (a sweep's
        runs) records the decision as deferred: the sweep offers its best version (offer()).
        """
        _check_name(name)
        history = _plain(list(history or []))
        earlier = next((v for v in self.versions(name) if job_id and v.get("job_id") == job_id), None)
        if earlier and earlier.get("promotion"):
            return earlier
        version = earlier["version"] if earlier else self._reserve(name)
        folder = self._version_dir(name, version)
        checkpoint.save_model(model, storage.join(folder, MODEL_FILE))
        meta = _plain({
            "name": name, "version": version, "recipe": recipe, "config": config,
            "data_fingerprint": data_fingerprint, "data_source": data_source,
            "metrics": metrics or {}, "history": history, "confusion": confusion, "job_id": job_id,
            "created_at": checkpoint.now(), "model_version": model.version, "promotion": None,
            "report": REPORT_FILE if history else None,
        })
        meta_ref = storage.join(folder, META_FILE)
        storage.write_text(meta_ref, _dump(meta))  # the version exists from here on
        meta["promotion"] = self._gate(name, meta["metrics"].get("val_accuracy"), float(tolerance)) if gate else \
            {"promoted": False, "deferred": True, "alias": PRODUCTION, "decided_at": checkpoint.now(),
             "reason": "a sweep's run: the sweep offers its best version to the gate when it ends"}
        if history:
            report.write_report(storage.join(folder, REPORT_FILE), title=f"{name} v{version}",
                                history=history, confusion=confusion, metrics=meta["metrics"], meta=meta)
        storage.write_text(meta_ref, _dump(meta))
        self.set_alias(name, LATEST, version, reason=f"registered by job {job_id}")
        if meta["promotion"]["promoted"]:
            self.promote(name, version, reason="gate: " + meta["promotion"]["reason"])
        if storage.local_path(folder) is None:
            storage.remove(storage.join(folder, ".reserved"))
        return self._info(name, version)

    # lookup
    def resolve(self, ref):
        """A model reference -> (model file path/URL, info dict).

        ref: "NAME@ALIAS" (digits@production, digits@latest), "NAME:VERSION" (digits:3), a bare
        "NAME" (its production version, else its latest when nothing is promoted yet), or the
        path/URL of an existing model file (returned as is, info {"name": None, "version": None}).
        info is the version's entry as in versions(). RegistryError names what is known.
        """
        ref = str(ref)
        m = re.match(r"^([A-Za-z0-9_.-]+)(?:@([A-Za-z0-9_.-]+)|:(\d+))?$", ref)
        names = self.names()
        if m and (m.group(2) or m.group(3) or m.group(1) in names):
            name, alias, version = m.groups()
            if name not in names:
                raise RegistryError(self._no_such_model(name, names))
            if version is None:
                aliases = self.aliases(name)
                want = alias or PRODUCTION
                version = aliases.get(want)
                if version is None and alias is None:
                    version = aliases.get(LATEST) or str(self._numbers(name)[-1])
                if version is None:
                    known = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
                    raise RegistryError(f"model {name!r} has no alias {alias!r}; aliases: {known}")
            info = self._info(name, version)
            return info["model"], info
        if storage.exists(ref) and not storage.isdir(ref):
            return ref, {"name": None, "version": None}
        raise RegistryError(f"{ref!r} is neither a registered model (NAME, NAME@ALIAS or NAME:VERSION; "
                            f"known models in {self.root}: {', '.join(names) or 'none registered'}) "
                            f"nor an existing model file")

    def _no_such_model(self, name, names):
        return (f"no model named {name!r} in registry {self.root}; "
                f"known models: {', '.join(names) or 'none registered'}")

    def _unknown_version(self, name, version):
        names = self.names()
        if name not in names:
            return self._no_such_model(name, names)
        known = ", ".join(str(n) for n in self._numbers(name))
        return f"model {name!r} has no version {version!r}; versions: {known}"

"""`digits models`, `promote` and `schedule`: the registry and the retraining schedule."""
from worker.cli.common import print_json


def cmd_models(a, s):
    from model.errors import RegistryError
    from model.registry.versions import Registry
    registry = Registry(s.storage)
    names = registry.names()
    if a.name is not None and a.name not in names:
        raise RegistryError(f"no model named {a.name!r} in registry {s.storage}; known models: "
                            f"{', '.join(names) or 'none registered'}")
    versions = registry.versions(a.name)
    if a.json:
        print_json(versions)
        return 0
    if not versions:
        print(f"no models registered under {s.storage}")
        return 0
    for v in versions:
        acc = (v.get("metrics") or {}).get("val_accuracy")
        acc = f"{acc:.4f}" if isinstance(acc, float) else "-"
        aliases = ",".join(v.get("aliases", [])) or "-"
        print(f"{v['name']}:{v['version']}  val_accuracy {acc}  aliases {aliases}  "
              f"recipe {v.get('recipe')}  created {v.get('created_at')}\n    report {v.get('report')}")
    return 0


def cmd_promote(a, s):
    from model.registry.versions import Registry
    Registry(s.storage).promote(a.name, a.version, reason="promoted by hand with `digits promote`")
    print(f"{a.name}:{a.version} is now production")
    return 0


def cmd_schedule(a, s):
    from worker.schedule import describe
    info = describe(s)
    if a.json:
        print_json(info)
        return 0
    if not info["enabled"]:
        print("no retraining scheduled (set DIGITS_RETRAIN_CRON and DIGITS_RETRAIN_DATA)")
    else:
        print(f"retrain {info['model']} from {info['data']} (recipe {info['recipe']}) on "
              f"cron '{info['cron']}'; next run {info['next_run']}")
    gc = info["gc"]
    if gc["enabled"]:
        from tasks.times import format_seconds
        print(f"gc of jobs ended more than {format_seconds(gc['older_than_seconds'])} ago on cron "
              f"'{gc['cron']}'; next run {gc['next_run']}")
    else:
        print("no scheduled gc (DIGITS_GC_CRON=off)")
    return 0

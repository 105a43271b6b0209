"""Expand a config's studies into fully resolved training runs with stable, readable ids.

A run's resolved config is its identity: defaults <- model preset <- augmentation <- setting <- seed.
Its id is `<model>.<augmentation>.<setting>.s<seed>`; a run named by several studies is one run.
"""

from __future__ import annotations

import difflib

from fmnist import augment, models
from fmnist.config import (
    ConfigError,
    cuda_graph_problem,
    deep_merge,
    load_schema,
    subschema,
    validate,
)


def run_id(model: str, augmentation: str, setting: str, seed: int) -> str:
    return f"{model}.{augmentation}.{setting}.s{seed}"


def _unknown(kind: str, name: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(
        f"{where}: unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(sorted(known))}. "
        f"Use one of these names, or define {name!r} under '{kind}s:' in your config."
    )


def known_model_names(config: dict) -> list[str]:
    return sorted(set(models.known_models()) | set(config.get("models", {})))


def known_augmentation_names(config: dict) -> list[str]:
    return sorted(set(augment.known_kinds()) | set(config.get("augmentations", {})))


def resolve_model(config: dict, name: str, where: str) -> tuple[dict, dict]:
    """(model block, training overrides) for a model name."""
    custom = config.get("models", {}).get(name)
    if custom is None and name not in models.PRESETS:
        raise _unknown("model", name, known_model_names(config), where)
    arch = custom["arch"] if custom else name
    try:
        preset = models.get_preset(arch)
        args = dict(custom.get("args", {})) if custom else {}
        models.check_args(arch, args)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"models.{name}: {exc}") from None
    overrides = deep_merge(preset.train, custom.get("train", {}) if custom else {})
    block = {
        "name": name,
        "arch": arch,
        "args": {**preset.args, **args},
        "source": (custom or {}).get("source") or preset.source,
    }
    return block, overrides


def resolve_augmentation(config: dict, name: str, where: str) -> tuple[dict, dict]:
    custom = config.get("augmentations", {}).get(name)
    if custom is None and name not in augment.KINDS:
        raise _unknown("augmentation", name, known_augmentation_names(config), where)
    spec = dict(custom) if custom else {"kind": name}
    kind = spec.pop("kind")
    overrides = spec.pop("train", {}) or {}
    try:
        params = augment.resolve(kind, spec)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"augmentations.{name}: {exc}") from None
    return {"name": name, "kind": kind, "params": params}, overrides


def resolve_setting(config: dict, name: str, where: str) -> dict:
    settings = config.get("settings", {})
    if name in settings:
        return settings[name] or {}
    if name == "default":
        return {}
    raise _unknown("setting", name, sorted(set(settings) | {"default"}), where)


_TRAIN_SCHEMAS: dict[int, tuple[dict, dict]] = {}


def _train_schema(schema: dict) -> dict:
    """The `train` sub-schema of `schema`, one object per schema so its validator is reused."""
    cached = _TRAIN_SCHEMAS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = _TRAIN_SCHEMAS[id(schema)] = (schema, subschema("train", schema))
    return cached[1]


def resolve_run(config: dict, model: str, augmentation: str, setting: str, seed: int,
                schema: dict | None = None, where: str = "") -> dict:
    schema = schema or load_schema()
    model_block, model_train = resolve_model(config, model, where)
    aug_block, aug_train = resolve_augmentation(config, augmentation, where)
    setting_train = resolve_setting(config, setting, where)
    train = deep_merge(config.get("defaults", {}), model_train)
    train = deep_merge(train, aug_train)
    train = deep_merge(train, setting_train)
    rid = run_id(model, augmentation, setting, seed)
    try:
        validate(train, _train_schema(schema))
    except ConfigError as exc:
        raise ConfigError(
            f"run {rid}: the merged training settings (defaults <- model {model!r} <- augmentation "
            f"{augmentation!r} <- setting {setting!r}) are invalid:\n{exc}"
        ) from None
    problem = cuda_graph_problem(train)
    if problem:
        raise ConfigError(f"run {rid}: {problem}")
    if train.get("dropout") is not None:
        if "dropout" not in model_block["args"]:
            raise ConfigError(
                f"run {rid}: setting {setting!r} overrides dropout, but model {model!r} has no dropout"
            )
        model_block["args"]["dropout"] = train["dropout"]
    if "input_mean" in model_block["args"]:
        # Models that re-normalise their input (transfer learning) must undo the trainer's normalisation.
        model_block["args"]["input_mean"] = train["normalize"]["mean"]
        model_block["args"]["input_std"] = train["normalize"]["std"]
    return {
        "id": rid,
        "model": model_block,
        "augmentation": aug_block,
        "setting": setting,
        "seed": int(seed),
        "train": train,
    }


def expand(config: dict) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """All runs (id -> resolved config, in study order) and each study's run ids."""
    schema = load_schema()
    runs: dict[str, dict] = {}
    studies: dict[str, list[str]] = {}
    for study, spec in config["studies"].items():
        ids = []
        for model in spec["models"]:
            for aug in spec.get("augmentations", ["none"]):
                for setting in spec.get("settings", ["default"]):
                    for seed in spec.get("seeds", [0]):
                        rid = run_id(model, aug, setting, seed)
                        if rid not in runs:
                            runs[rid] = resolve_run(
                                config, model, aug, setting, seed, schema, where=f"studies.{study}"
                            )
                        ids.append(rid)
        studies[study] = ids
    return runs, studies


def experiment_id(run: dict) -> str:
    """The run id without its seed: the unit over which seeds are averaged."""
    return run["id"].rsplit(".s", 1)[0]

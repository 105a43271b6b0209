"""Load and validate workflow configs against the packaged schema.yaml, filling defaults, with errors that name the key path."""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout (meaningful only for a source tree)
# Package data, so a regular (non-editable) install finds it too.
SCHEMA_PATH = Path(__file__).resolve().parent / "schema.yaml"
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


class ConfigError(ValueError):
    """A configuration problem, phrased for the user: where it is and how to fix it."""


# libyaml's parser when PyYAML has it (its wheels do): ~9x faster than the pure-Python one, which
# Snakemake would otherwise pay for the schema and the published figures on every invocation.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(stream):
    """yaml.safe_load, with libyaml's parser where available (the same documents, the same errors)."""
    return yaml.load(stream, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader


def load_schema(path: Path | str = SCHEMA_PATH) -> dict:
    with open(path) as fh:
        return safe_load(fh)


def _with_defaults(validator_class):
    """A validator that fills `default` values in while validating (the jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                if "default" in subschema and prop not in instance:
                    instance[prop] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def key_path(path) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else f".{p}" if parts else str(p))
    return "".join(parts) or "<top level>"


def explain(error: jsonschema.ValidationError) -> str:
    """One line per problem: the key path, what is wrong, what is allowed."""
    best = jsonschema.exceptions.best_match([error]) if error.context else error
    where = key_path(best.absolute_path)
    if best.validator == "additionalProperties" and isinstance(best.instance, dict):
        allowed = sorted((best.schema.get("properties") or {}).keys())
        extra = [k for k in best.instance if k not in allowed]
        hints = []
        for k in extra:
            close = difflib.get_close_matches(str(k), allowed, n=1)
            hints.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        if allowed:
            return (
                f"{where}: unknown key {', '.join(hints)}; allowed keys: {', '.join(allowed)}"
            )
    if best.validator == "enum":
        return f"{where}: {best.instance!r} is not allowed; choose one of {best.validator_value}"
    if best.validator == "pattern":
        return f"{where}: {best.instance!r} does not match the pattern {best.validator_value}"
    if best.validator == "required":
        return f"{where}: {best.message}"
    return f"{where}: {best.message}"


_VALIDATORS: dict[tuple[int, bool], tuple[dict, jsonschema.protocols.Validator]] = {}


def _validator(schema: dict, fill_defaults: bool):
    """One validator per schema object: building one compiles its patterns, which is what costs
    time when the same schema checks hundreds of runs."""
    key = (id(schema), fill_defaults)
    cached = _VALIDATORS.get(key)
    if cached is not None and cached[0] is schema:
        return cached[1]
    cls = jsonschema.validators.validator_for(schema)
    if fill_defaults:
        cls = _with_defaults(cls)
    validator = cls(schema)
    _VALIDATORS[key] = (schema, validator)  # holding the schema keeps its id from being reused
    return validator


def validate(
    config: dict,
    schema: dict | None = None,
    fill_defaults: bool = True,
    what: str = "invalid configuration",
    fix: str = "Fix the keys above in your config file (reference: docs/workflow.md, 'Configuration', and src/fmnist/schema.yaml).",
) -> dict:
    """Validate `config` in place (filling defaults) and return it; raise ConfigError on problems.

    The error starts with `what`, lists one line per problem (key path, what is wrong, what is
    allowed) and ends with `fix`."""
    schema = schema if schema is not None else load_schema()
    validator = _validator(schema, fill_defaults)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    while errors and coerce_strings(config, errors, validator):
        errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [explain(e) for e in errors]
        raise ConfigError(f"{what}:\n  - " + "\n  - ".join(dict.fromkeys(lines)) + f"\n{fix}")
    return config


def coerce_strings(config: dict, errors, validator) -> bool:
    """Replace each string where the schema wants a number, boolean, null, list or mapping by its YAML
    value when that has the wanted type; True when any changed.

    Snakemake parses a nested `--config 'defaults={epochs: 1}'` with YAML's base loader, which keeps
    every scalar a string ({'epochs': '1'}); read as YAML, '1' is the integer the user wrote. A string
    that is not such a value stays, and its error stands."""
    changed = False
    for error in errors:
        if error.validator != "type" or not isinstance(error.instance, str) or not error.absolute_path:
            continue
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        value = _yaml_value(error.instance, wanted)
        if isinstance(value, str) or not any(validator.is_type(value, t) for t in wanted):
            continue
        *parents, last = error.absolute_path
        holder = config
        for key in parents:
            holder = holder[key]
        holder[last] = value
        changed = True
    return changed


def _yaml_value(text: str, wanted: list[str]) -> Any:
    """`text` read as YAML; where YAML 1.1 keeps a number a string ('1e-3' lacks its dot), as a float."""
    try:
        value = safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and "number" in wanted:
        try:
            return float(text)
        except ValueError:
            return text
    return value


def subschema(name: str, schema: dict | None = None) -> dict:
    """A self-contained schema for one of the schema's definitions (e.g. 'train')."""
    schema = schema if schema is not None else load_schema()
    return {"$ref": f"#/definitions/{name}", "definitions": schema["definitions"]}


def nvidia_gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible, without importing torch (which takes seconds)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return Path("/dev/nvidiactl").exists() or bool(visible)


def load(path: Path | str, overrides: Mapping[str, Any] | None = None) -> dict:
    with open(path) as fh:
        config = safe_load(fh) or {}
    if overrides:
        config = deep_merge(config, overrides)
    return validate(config)


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """A copy of `base` with `override` merged in; nested mappings merge, everything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def canonical_json(obj: Any) -> str:
    """`obj` as JSON text that equal objects share: sorted keys, no spaces."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def config_hash(obj: Any) -> str:
    """A short hash of `obj`'s canonical JSON (a run's resolved config: its resume state's identity)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:12]


GRAPH_OPTIMIZERS = ("adam", "adamw")
"""Optimizers whose step a CUDA graph captures with the recipe intact: capturable, their lr and betas
tensors that the schedules fill in place (one-cycle's momentum included, fmnist.recipes.Schedule)."""


def cuda_graph_problem(train: dict) -> str:
    """Why a run's `train` settings cannot train under `cuda_graph: true` as they train eagerly, with
    the fix; "" when they can (or cuda_graph is off). The device is checked where the run trains.

    - compile: reduce-overhead compile already graphs the model; the two do not stack.
    - sgd: torch's SGD step reads a tensor lr on the host (`.item()`), which graph capture forbids,
      and a schedule that cycles its momentum (one-cycle) writes a float the graph would freeze;
      adagrad and rmsprop have no capturable step with a tensor lr.
    """
    if not train.get("cuda_graph"):
        return ""
    if train.get("compile"):
        return "train.cuda_graph and train.compile are exclusive: set one of them false"
    name = train["optimizer"]["name"]
    if name not in GRAPH_OPTIMIZERS:
        return (
            f"train.cuda_graph: optimizer {name!r} cannot be captured in a CUDA graph with its recipe intact "
            f"(its step reads the learning rate on the host, or a captured graph would freeze the momentum "
            f"a schedule changes); use optimizer {' or '.join(GRAPH_OPTIMIZERS)}, or set cuda_graph: false"
        )
    return ""

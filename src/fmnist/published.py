"""The published figures a study is compared with: their metrics, their file's schema and its checks.

Light to import (PyYAML and jsonschema, both of which Snakemake brings): the workflow checks the
report section and the published-figures file while parsing, in an environment that may hold
Snakemake alone (the workflow catalog's linter, a `--sdm conda` user). The comparison itself, which
needs pandas, is fmnist.compare, which re-exports everything here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import yaml

from fmnist.config import ConfigError, safe_load, validate


class Metric(NamedTuple):
    """How a published metric is read from runs.csv and judged."""

    column: str
    """runs.csv column."""
    factor: float
    """factor from the column's unit to the published unit (100 for a fraction shown in %)."""
    description: str
    kind: str = "score"
    """score: a result that varies by seed, judged by the prediction interval (accuracy, loss,
    precision, recall, F1); count: a fixed number compared exactly (parameters); timing: hardware
    dependent, shown beside ours and never judged (seconds per epoch)."""
    better: str | None = None
    """higher or lower; None: lower for a metric whose name holds "loss", else higher."""
    split_noise: str | None = None
    """accuracy or loss: a figure measured on a validation split, which is the report's own and
    not ours, so its comparison counts both splits' sampling noise (`stats.split_sd`); None: a
    figure on the shared 10,000-image test set, whose noise both sides share."""


METRICS: dict[str, tuple] = {
    "test_accuracy": Metric("test_accuracy", 100.0, "test accuracy (%)"),
    "val_accuracy": Metric("best_val_accuracy", 100.0, "highest validation accuracy over the epochs (%)", "score", "higher",
                           "accuracy"),
    "test_loss": Metric("test_loss", 1.0, "test loss", "score", "lower"),
    "val_loss": Metric("best_val_loss", 1.0, "lowest validation loss over the epochs (not always the epoch of the highest accuracy)",
                       "score", "lower", "loss"),
    "seconds_per_epoch": Metric("seconds_per_epoch", 1.0, "seconds per epoch", "timing"),
    "train_seconds": Metric("train_seconds", 1.0, "training time of the whole run (s)", "timing"),
    "params": Metric("params", 1.0, "parameters", "count"),
    "precision": Metric("precision_macro", 100.0, "test precision, macro average (%)"),
    "recall": Metric("recall_macro", 100.0, "test recall, macro average (%)"),
    "f1": Metric("f1_macro", 100.0, "test F1, macro average (%)"),
}
"""published metric -> Metric(runs.csv column, factor to the published unit, description[, kind[, better]]).

Add a metric with one line here (and its runs.csv column in aggregate.RUN_COLUMNS). A plain
3-tuple (column, factor, description) is read as a score (judged by the prediction interval),
higher is better unless its name holds "loss"; give kind "count" or "timing" otherwise."""

KINDS = ("score", "count", "timing")
SPLIT_NOISE = (None, "accuracy", "loss")
OUR_VAL_SIZE = 6000
"""Images in our shared validation split when runs.csv does not say (`data.val_fraction` 0.1 of
60,000): the size `split_sd` uses for our side of a validation figure."""


def metric_spec(name: str) -> Metric:
    """The Metric of a published metric name, its kind checked and its direction filled in."""
    if name not in METRICS:
        raise ConfigError(f"unknown published metric {name!r}; known: {', '.join(METRICS)}. "
                          "Add it to fmnist.published.METRICS (one line).")
    spec = Metric(*METRICS[name])
    if spec.split_noise not in SPLIT_NOISE:
        raise ConfigError(f"fmnist.published.METRICS[{name!r}]: split_noise {spec.split_noise!r} is not "
                          "accuracy, loss or None.")
    if spec.kind not in KINDS:
        raise ConfigError(f"fmnist.published.METRICS[{name!r}]: kind {spec.kind!r} is not one of {', '.join(KINDS)}.")
    better = spec.better or ("lower" if "loss" in name else "higher")
    if better not in ("higher", "lower"):
        raise ConfigError(f"fmnist.published.METRICS[{name!r}]: better {better!r} is not higher or lower.")
    return spec._replace(better=better)

EXPERIMENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*\.[A-Za-z0-9][A-Za-z0-9_-]*\.[A-Za-z0-9][A-Za-z0-9_-]*$"

PUBLISHED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["published"],
    "properties": {
        "published": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["source", "experiment", "metric", "value"],
                "properties": {
                    "source": {"type": "string", "enum": ["A", "B", "C", "D", "E"]},
                    "study": {"type": ["string", "null"], "default": None},
                    "experiment": {"type": "string", "pattern": EXPERIMENT_PATTERN},
                    "label": {"type": "string", "default": ""},
                    "metric": {"type": "string", "enum": list(METRICS)},
                    "value": {"type": ["number", "null"]},
                    "epochs": {"type": ["integer", "null"], "minimum": 1, "default": None},
                    "split_size": {"type": ["integer", "null"], "minimum": 1, "default": None},
                    "best_epoch": {"type": ["integer", "null"], "minimum": 1, "default": None},
                    "epochs_run": {"type": ["integer", "null"], "minimum": 1, "default": None},
                    "note": {"type": ["string", "null"], "default": ""},
                },
            },
        },
        "effects": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["source", "a", "b", "metric", "published", "claim"],
                "properties": {
                    "source": {"type": "string", "enum": ["A", "B", "C", "D", "E"]},
                    "a": {"type": "string", "pattern": EXPERIMENT_PATTERN},
                    "b": {"type": "string", "pattern": EXPERIMENT_PATTERN},
                    "metric": {"type": "string", "enum": list(METRICS)},
                    "published": {"type": ["number", "null"]},
                    "expect": {"type": ["string", "null"], "enum": ["higher", "lower", "none", None], "default": None},
                    "claim": {"type": "string", "minLength": 1},
                    "note": {"type": ["string", "null"], "default": ""},
                },
            },
        },
    },
}

EXPECTS = ("higher", "lower", "none")
"""What a claim says of a - b: higher, lower, or none (no difference: "comparable", "similar", "no
gain"). Required where the claim gives no number (`published: null`); otherwise the published
difference's sign, unless the report's words call the two similar (`expect: none`)."""


def load_published(path: Path | str | None) -> list[dict]:
    """The entries of a published-figures file (config/published.yaml), validated; [] for no file."""
    if not path:
        return []
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"{path}: published-figures file not found. Create it (format: config/published.yaml) "
            "or set `report: {published: ''}` in your config to leave the comparison out."
        )
    restore = f"restore it with `git checkout -- {path}` or fix it by hand"
    try:
        text = path.read_text()
        doc = safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc}). Fix: {restore}.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML (damaged or truncated): {exc}\nFix: {restore}.") from None
    if doc is None:
        raise ConfigError(
            f"{path}: the file is empty. Fix: {restore}, or set `report: {{published: ''}}` in your "
            "config to leave the comparison out."
        )
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: holds a YAML {type(doc).__name__}, not a mapping with a `published:` list. Fix: {restore}.")
    validate(
        doc, PUBLISHED_SCHEMA, what=f"{path}: invalid published figure(s)",
        fix="Each entry needs source (A-E), experiment (<model>.<augmentation>.<setting>), "
        f"metric (one of {', '.join(METRICS)}) and value (a number, or null for figure-only results); "
        f"or {restore}.",
    )
    entries = doc.get("published") or []
    for e in entries:
        e["label"] = e.get("label") or e["experiment"]
        e["note"] = e.get("note") or ""
    return entries


def _read(path: Path) -> dict:
    restore = f"restore it with `git checkout -- {path}` or fix it by hand"
    try:
        doc = safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML ({exc}). Fix: {restore}.") from None
    return doc if isinstance(doc, dict) else {}


def load_effects(path: Path | str | None) -> list[dict]:
    """The reports' comparative claims (`effects:` of the published-figures file), validated: each
    names two experiments a and b, a metric, the published difference a - b (null where the report
    states the claim in words only, with `expect`: higher, lower or none) and the report's words.
    [] for no file or no `effects:`."""
    if not path or not Path(path).exists():
        return []
    load_published(path)  # the whole file's schema, with its clear errors
    path = Path(path)
    effects = _read(path).get("effects") or []
    for i, e in enumerate(effects):
        if e["a"] == e["b"]:
            raise ConfigError(f"{path}: effects[{i}] compares {e['a']} with itself; name two experiments.")
        if e["published"] is None and not e.get("expect"):
            raise ConfigError(f"{path}: effects[{i}] ({e['claim'][:60]!r}) has no published difference; "
                              "give `expect: higher`, `lower` or `none` for a claim made in words only.")
        if e["published"] is not None and e.get("expect") in ("higher", "lower"):
            sign = "higher" if e["published"] > 0 else "lower" if e["published"] < 0 else "none"
            if sign != e["expect"]:
                raise ConfigError(f"{path}: effects[{i}] ({e['claim'][:60]!r}): published {e['published']:+g} "
                                  f"is {sign}, but expect says {e['expect']}; drop `expect` or fix the sign.")
        e["expect"] = e.get("expect") or (
            "higher" if e["published"] > 0 else "lower" if e["published"] < 0 else "none")
        e["note"] = e.get("note") or ""
    return effects


def check_report_config(report: dict, studies: dict[str, list[str]]) -> None:
    """Fail early on a report section that names a missing study, repeats a sweep, or a bad published file."""
    names = [s["name"] for s in report.get("sweeps", [])]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"report.sweeps: the name(s) {', '.join(repeated)} appear more than once; give each sweep its own name.")
    for sweep in report.get("sweeps", []):
        if sweep["study"] not in studies:
            raise ConfigError(
                f"report.sweeps[{sweep['name']}]: study {sweep['study']!r} is not in this config "
                f"(studies: {', '.join(studies)}); name one of them or remove the sweep."
            )
    load_published(report.get("published"))
    load_effects(report.get("published"))

"""Findings from the runs table: published beside reproduced, paired effects, gaps to the best, sweeps, Pareto fronts.

Torch-free (pandas only). Intervals are Student's t 95% intervals of a mean over seeds; differences
between two experiments are paired by seed (same data split and seed, different model or
augmentation), which removes the seed-to-seed spread they share.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fmnist.aggregate import mean_ci
from fmnist.config import ConfigError, validate

METRICS: dict[str, tuple[str, float, str]] = {
    "test_accuracy": ("test_accuracy", 100.0, "test accuracy (%)"),
    "val_accuracy": ("best_val_accuracy", 100.0, "best validation accuracy (%)"),
    "test_loss": ("test_loss", 1.0, "test loss"),
    "val_loss": ("best_val_loss", 1.0, "best validation loss"),
    "seconds_per_epoch": ("seconds_per_epoch", 1.0, "seconds per epoch"),
    "params": ("params", 1.0, "parameters"),
    "precision": ("precision_macro", 100.0, "test precision, macro average (%)"),
    "recall": ("recall_macro", 100.0, "test recall, macro average (%)"),
    "f1": ("f1_macro", 100.0, "test F1, macro average (%)"),
}
"""published metric -> (runs.csv column, factor to the published unit, description)."""

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
                    "note": {"type": ["string", "null"], "default": ""},
                },
            },
        },
    },
}


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
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    validate(
        doc, PUBLISHED_SCHEMA, what=f"{path}: invalid published figure(s)",
        fix="Each entry needs source (A-E), experiment (<model>.<augmentation>.<setting>), "
        f"metric (one of {', '.join(METRICS)}) and value (a number, or null for figure-only results).",
    )
    entries = doc.get("published") or []
    for e in entries:
        e["label"] = e.get("label") or e["experiment"]
        e["note"] = e.get("note") or ""
    return entries


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


def _stats(values: pd.Series, factor: float = 1.0) -> dict:
    return mean_ci(float(v) * factor for v in values if v is not None and not pd.isna(v))


def verdict_inside(value: float | None, stats: dict) -> str:
    """Where a published figure lies relative to our interval: inside, above, below, or why not known."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "figure only"
    if stats["n"] == 0:
        return "no result"
    if stats["n"] < 2:
        return "one seed: no interval"
    if stats["ci95_low"] <= value <= stats["ci95_high"]:
        return "inside"
    return "above" if value > stats["ci95_high"] else "below"


def compare_published(published: list[dict], runs: pd.DataFrame) -> pd.DataFrame:
    """One row per published figure: the figure, our mean/std/CI in the same unit, difference, verdict."""
    rows = []
    for e in published:
        column, factor, description = METRICS[e["metric"]]
        group = runs[runs["experiment"] == e["experiment"]] if len(runs) else runs
        values = group[column] if column in group else pd.Series(dtype=float)
        stats = _stats(values, factor)
        value = e["value"]
        ran = len(group) > 0
        statuses = group["status"].value_counts().to_dict() if ran else {}
        diff = stats["mean"] - value if value is not None and stats["n"] else math.nan
        rows.append({
            "source": e["source"],
            "study": e.get("study") or "",
            "label": e["label"],
            "experiment": e["experiment"],
            "metric": e["metric"],
            "metric_description": description,
            "published": math.nan if value is None else float(value),
            "published_epochs": e.get("epochs"),
            "seeds": stats["n"],
            "runs": len(group),
            "status": ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) if ran else "not run",
            "our_epochs_run_mean": float(group["epochs_run"].mean()) if ran else math.nan,
            "our_epochs_max": int(group["epochs_max"].max()) if ran else None,
            "reproduced_mean": stats["mean"],
            "reproduced_std": stats["std"],
            "reproduced_ci95_low": stats["ci95_low"],
            "reproduced_ci95_high": stats["ci95_high"],
            "difference": diff,
            "verdict": verdict_inside(value, stats) if ran else "not run",
            "note": e.get("note") or "",
        })
    return pd.DataFrame(rows, columns=PUBLISHED_COLUMNS)


PUBLISHED_COLUMNS = [
    "source", "study", "label", "experiment", "metric", "metric_description", "published",
    "published_epochs", "seeds", "runs", "status", "our_epochs_run_mean", "our_epochs_max",
    "reproduced_mean", "reproduced_std", "reproduced_ci95_low", "reproduced_ci95_high",
    "difference", "verdict", "note",
]


def paired_difference(runs: pd.DataFrame, exp_a: str, exp_b: str, column: str = "test_accuracy",
                      factor: float = 100.0) -> dict:
    """Mean and 95% t-interval of (a - b) over the seeds where both experiments have a value."""
    a = runs.loc[runs["experiment"] == exp_a, ["seed", column]].dropna()
    b = runs.loc[runs["experiment"] == exp_b, ["seed", column]].dropna()
    both = a.merge(b, on="seed", suffixes=("_a", "_b"))
    diffs = (both[f"{column}_a"] - both[f"{column}_b"]) * factor
    stats = mean_ci(diffs)
    return {**stats, "seeds": " ".join(str(int(s)) for s in sorted(both["seed"]))}


def verdict_difference(stats: dict) -> str:
    """Whether a paired difference is distinguishable from zero at 95%."""
    if stats["n"] == 0:
        return "no common seed"
    if stats["n"] < 2 or math.isnan(stats["ci95_low"]):
        return "one seed: no interval"
    if stats["ci95_low"] > 0:
        return "better"
    if stats["ci95_high"] < 0:
        return "worse"
    return "no clear difference"


def augmentation_effects(runs: pd.DataFrame, baseline: str = "none") -> pd.DataFrame:
    """For each model and setting: each augmentation's change in test accuracy (points) vs `baseline`, paired by seed."""
    rows = []
    if not len(runs):
        return pd.DataFrame(columns=EFFECT_COLUMNS)
    experiments = runs.drop_duplicates("experiment")
    for (model, setting), group in experiments.groupby(["model", "setting"], sort=False):
        base = group[group["augmentation"] == baseline]
        if base.empty:
            continue
        base_exp = base["experiment"].iloc[0]
        for _, row in group[group["augmentation"] != baseline].iterrows():
            stats = paired_difference(runs, row["experiment"], base_exp)
            rows.append({
                "model": model, "setting": setting, "augmentation": row["augmentation"],
                "baseline": baseline, "experiment": row["experiment"], "baseline_experiment": base_exp,
                "pairs": stats["n"], "seeds": stats["seeds"], "difference_mean": stats["mean"],
                "difference_std": stats["std"], "ci95_low": stats["ci95_low"],
                "ci95_high": stats["ci95_high"], "verdict": verdict_difference(stats),
            })
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


EFFECT_COLUMNS = [
    "model", "setting", "augmentation", "baseline", "experiment", "baseline_experiment", "pairs",
    "seeds", "difference_mean", "difference_std", "ci95_low", "ci95_high", "verdict",
]


def leaderboard(experiments: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The experiments table ranked by mean test accuracy, with each row's paired gap to the top one."""
    board = experiments.copy().reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    gaps = []
    top = board["experiment"].iloc[0] if len(board) else None
    for exp in board["experiment"]:
        if exp == top:
            gaps.append({"gap_to_best": 0.0, "gap_ci95_low": math.nan, "gap_ci95_high": math.nan,
                         "vs_best": "best"})
            continue
        stats = paired_difference(runs, exp, top)
        verdict = verdict_difference(stats)
        gaps.append({
            "gap_to_best": stats["mean"], "gap_ci95_low": stats["ci95_low"],
            "gap_ci95_high": stats["ci95_high"],
            "vs_best": {"worse": "worse", "no clear difference": "tied", "better": "better"}.get(verdict, verdict),
        })
    return pd.concat([board, pd.DataFrame(gaps, index=board.index)], axis=1) if len(board) else board


def config_value(config: dict, key: str):
    """A run config's value at a dotted key: `model.*`/`augmentation.*`/`seed` from the top, anything else under `train`."""
    parts = key.split(".")
    node: Any = config if parts[0] in ("model", "augmentation", "seed", "setting") else config.get("train", {})
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def sweep_table(runs: pd.DataFrame, configs: dict[str, dict], run_ids: list[str], sweep: dict) -> pd.DataFrame:
    """Mean test accuracy (%) with CI per value of the sweep's `x`, one line per group of experiments
    whose resolved configs are equal apart from `x`."""
    key = sweep["x"]
    per_exp: dict[str, dict] = {}
    for rid in run_ids:
        if rid not in configs:
            continue
        cfg = configs[rid]
        try:
            x = config_value(cfg, key)
        except KeyError:
            raise ConfigError(
                f"report.sweeps[{sweep['name']}]: run {rid} has no setting {key!r}. Give x as a dotted key "
                "of the resolved run config: a training key (batch_size, optimizer.lr) or model.args.<arg>."
            ) from None
        exp = rid.rsplit(".s", 1)[0]
        rest = copy.deepcopy({k: v for k, v in cfg.items() if k not in ("id", "seed", "setting")})
        _drop(rest, key)
        per_exp.setdefault(exp, {"x": x, "rest": repr(_canonical(rest)), "model": cfg["model"]["name"],
                                 "augmentation": cfg["augmentation"]["name"]})
    lines: dict[str, str] = {}
    rows = []
    for exp, info in per_exp.items():
        base = f"{info['model']} + {info['augmentation']}"
        if info["rest"] not in lines:
            taken = sum(1 for v in lines.values() if v.split(" #")[0] == base)
            lines[info["rest"]] = base if not taken else f"{base} #{taken + 1}"
        group = runs[runs["experiment"] == exp]
        stats = _stats(group["test_accuracy"], 100.0) if len(group) else mean_ci([])
        rows.append({
            "sweep": sweep["name"], "x_key": key, "x": _label(info["x"]), "x_numeric": _numeric(info["x"]),
            "line": lines[info["rest"]], "experiment": exp, "seeds": stats["n"], "mean": stats["mean"],
            "std": stats["std"], "ci95_low": stats["ci95_low"], "ci95_high": stats["ci95_high"],
        })
    df = pd.DataFrame(rows, columns=["sweep", "x_key", "x", "x_numeric", "line", "experiment", "seeds",
                                     "mean", "std", "ci95_low", "ci95_high"])
    return df.sort_values(["line", "x_numeric"], kind="stable").reset_index(drop=True)


def _drop(cfg: dict, key: str) -> None:
    parts = key.split(".")
    node = cfg if parts[0] in ("model", "augmentation") else cfg.get("train", {})
    for part in parts[:-1]:
        node = node.get(part, {})
    node.pop(parts[-1], None)


def _canonical(obj):
    if isinstance(obj, dict):
        return tuple(sorted((k, _canonical(v)) for k, v in obj.items()))
    if isinstance(obj, list):
        return tuple(_canonical(v) for v in obj)
    return obj


def _label(x) -> str:
    if isinstance(x, list | tuple):
        return "-".join(map(str, x))
    return str(x)


def _numeric(x) -> float:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else math.nan


def pareto_front(costs: list[float], gains: list[float]) -> list[bool]:
    """Which points no other point beats: lower-or-equal cost with higher gain (or equal gain, lower cost)."""
    front = []
    for i, (c, g) in enumerate(zip(costs, gains, strict=True)):
        if any(math.isnan(v) for v in (c, g)):
            front.append(False)
            continue
        dominated = any(
            j != i and not math.isnan(c2) and not math.isnan(g2)
            and c2 <= c and g2 >= g and (c2 < c or g2 > g)
            for j, (c2, g2) in enumerate(zip(costs, gains, strict=True))
        )
        front.append(not dominated)
    return front


def confused_pairs(confusion: pd.DataFrame, k: int = 3) -> list[dict]:
    """The k largest off-diagonal cells of a confusion matrix (rows true, columns predicted)."""
    cm = confusion.to_numpy()
    classes = list(confusion.columns)
    totals = cm.sum(axis=1)
    cells = [(int(cm[i, j]), i, j) for i in range(cm.shape[0]) for j in range(cm.shape[1]) if i != j and cm[i, j] > 0]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [{"true": classes[i], "predicted": classes[j], "count": n,
             "fraction": n / totals[i] if totals[i] else math.nan} for n, i, j in cells[:k]]

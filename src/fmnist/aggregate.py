"""Collect per-run metrics into tables: one row per run, and mean/std/95% CI over seeds per experiment.

Builds on fmnist.stats (intervals) and fmnist.compare (findings); neither imports this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from fmnist import compare
from fmnist.stats import mean_ci

EXPERIMENT_KEYS = ["model", "augmentation", "setting"]

RUN_COLUMNS = [
    "run_id", "experiment", "model", "arch", "augmentation", "setting", "seed", "status",
    "status_reason", "test_accuracy", "test_loss", "precision_macro", "recall_macro", "f1_macro",
    "best_val_accuracy", "best_val_loss", "best_epoch", "epochs_run", "epochs_max", "params",
    "trainable_params", "train_seconds", "images_per_second", "peak_memory_mb", "device",
    "device_name", "n_train", "config_hash", "seconds_per_epoch", "val_loss_tested", "val_loss_image_std",
]


def load_metrics(paths: Iterable[Path | str]) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]


def runs_table(metrics: list[dict]) -> pd.DataFrame:
    """One row per run, with per-class test accuracy as `acc_<class>` columns."""
    rows = []
    for m in metrics:
        row = {k: m.get(k) for k in RUN_COLUMNS if k != "experiment"}
        row["experiment"] = m["run_id"].rsplit(".s", 1)[0]
        epochs = m.get("epochs_run") or 0
        row["seconds_per_epoch"] = m["train_seconds"] / epochs if epochs and m.get("train_seconds") is not None else None
        for cls, acc in (m.get("per_class_accuracy") or {}).items():
            row[f"acc_{cls}"] = acc
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    extra = [c for c in df.columns if c not in RUN_COLUMNS]
    return df[RUN_COLUMNS + extra]


def experiments_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per experiment (model x augmentation x setting): seeds, mean/std/CI of test and best validation
    accuracy, costs. Every seed with a finite value counts, whatever its status: a seed that did not
    learn is a result (the status counts say so), not a gap."""
    out = []
    for exp, group in runs.groupby("experiment", sort=False):
        ok = group[group["status"] == "ok"]
        test = mean_ci(group["test_accuracy"])
        val = mean_ci(group["best_val_accuracy"])
        first = group.iloc[0]
        statuses = group["status"].value_counts()
        out.append({
            "experiment": exp,
            **{k: first[k] for k in EXPERIMENT_KEYS},
            "runs": len(group),
            "ok": len(ok),
            "diverged": int(statuses.get("diverged", 0)),
            "not_learned": int(statuses.get("not_learned", 0)),
            "seeds": " ".join(str(s) for s in sorted(group["seed"])),
            "n": test["n"],
            "test_accuracy_mean": test["mean"],
            "test_accuracy_std": test["std"],
            "test_accuracy_ci95_low": test["ci95_low"],
            "test_accuracy_ci95_high": test["ci95_high"],
            "best_val_accuracy_mean": val["mean"],
            "best_val_accuracy_ci95_low": val["ci95_low"],
            "best_val_accuracy_ci95_high": val["ci95_high"],
            "f1_macro_mean": group["f1_macro"].mean(),
            "test_loss_mean": group["test_loss"].mean(),
            "params": int(first["params"]),
            "train_seconds_mean": group["train_seconds"].mean(),
            "seconds_per_epoch_mean": group["seconds_per_epoch"].mean(),
            "images_per_second_mean": group["images_per_second"].mean(),
            "epochs_run_mean": group["epochs_run"].mean(),
            "epochs_max": int(group["epochs_max"].max()),
        })
    df = pd.DataFrame(out)
    if df.empty:
        return df
    return df.sort_values("test_accuracy_mean", ascending=False, na_position="last").reset_index(drop=True)


def study_tables(experiments: pd.DataFrame, runs: pd.DataFrame, studies: dict[str, list[str]]) -> dict[str, pd.DataFrame]:
    """Each study's rows of the experiments table."""
    out = {}
    for study, run_ids in studies.items():
        if experiments.empty:  # no run has finished yet (a record that has just begun)
            out[study] = experiments
            continue
        exps = list(dict.fromkeys(runs.loc[runs["run_id"].isin(run_ids), "experiment"]))
        out[study] = experiments[experiments["experiment"].isin(exps)].reset_index(drop=True)
    return out


def write_table(df: pd.DataFrame, tables_dir: Path, name: str) -> None:
    df.to_csv(tables_dir / f"{name}.csv", index=False)
    (tables_dir / f"{name}.md").write_text(to_markdown(df) + "\n")


def write_all(metric_paths: Iterable[Path | str], studies: dict[str, list[str]], runs_csv: Path | str,
              experiments_csv: Path | str, tables_dir: Path | str, published: list[dict] | None = None,
              sweeps: list[dict] | None = None, baseline: str = "none",
              claims: list[dict] | None = None) -> dict[str, pd.DataFrame]:
    """runs.csv, experiments.csv and results/tables/*.csv|md: leaderboard, published, effects,
    findings (the reports' claims judged, `claims` from fmnist.published.load_effects), one table per
    study and per sweep."""
    metrics = load_metrics(metric_paths)
    runs = runs_table(metrics)
    exps = experiments_table(runs)
    runs.to_csv(runs_csv, index=False)
    exps.to_csv(experiments_csv, index=False)
    tables_dir = Path(tables_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    out = {"runs": runs, "experiments": exps}
    out["leaderboard"] = compare.leaderboard(exps, runs)
    out["published"] = compare.compare_published(published or [], runs)
    out["effects"] = compare.augmentation_effects(runs, baseline)
    out["findings"] = compare.compare_effects(claims or [], runs)
    for name in ("leaderboard", "published", "effects", "findings"):
        write_table(out[name], tables_dir, name)
    for study, table in study_tables(exps, runs, studies).items():
        out[f"study_{study}"] = table
        write_table(table, tables_dir, f"study_{study}")
    configs = {m["run_id"]: m.get("config") or {} for m in metrics}
    for sweep in sweeps or []:
        if sweep["study"] not in studies:
            raise ValueError(
                f"report.sweeps[{sweep['name']}]: study {sweep['study']!r} is not in this config "
                f"(studies: {', '.join(studies)}); name one of them or remove the sweep."
            )
        table = compare.sweep_table(runs, configs, studies[sweep["study"]], sweep)
        out[f"sweep_{sweep['name']}"] = table
        write_table(table, tables_dir, f"sweep_{sweep['name']}")
    return out


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A GitHub-flavoured Markdown table (pandas' to_markdown needs tabulate, which is not required)."""
    cols = list(df.columns)

    def fmt(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, floatfmt)
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)

"""Cost: the images each run trains and evaluates, at its model's measured images/s, in hours per run,
per study and in total. Early stopping makes every estimate an upper bound: a run is costed for all
its epochs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fmnist import config as fmnist_config
from fmnist import features
from fmnist.plan.cache import (
    fast_mode,
    feature_figure_key,
    find_figure,
    load_cache,
    measure,
    save_cache,
    throughput_key,
)
from fmnist.plan.labels import measuring_label, plan_label

FULL_TRAIN_IMAGES = 60_000
FULL_TEST_IMAGES = 10_000
EVAL_SPEEDUP = 3.0
"""An evaluation forward pass costs about a third of a training step (forward + backward)."""


def split_sizes(data_cfg: dict, train_fraction: float = 1.0) -> dict[str, int]:
    """Images in the train, val and test splits a run uses (the prepared file's sizes, computed)."""
    pool = data_cfg.get("train_limit") or FULL_TRAIN_IMAGES
    val = round(pool * data_cfg.get("val_fraction", 0.1))
    train = round((pool - val) * train_fraction)
    return {"train": train, "val": val, "test": data_cfg.get("test_limit") or FULL_TEST_IMAGES}


def run_cost(run: dict, sizes: dict[str, int], figure: dict | None, fast: bool) -> dict[str, Any]:
    """Images and estimated seconds of one run (None where its model has no figure).

    `seconds`: the whole job's training and evaluation; `train_seconds`: what its metrics.json's
    `train_seconds` times (each epoch's training and validation, not the final test).
    A run on cached features (fast, and fmnist.features.cacheable) trains only its head; the backbone
    pass is costed once per feature set by `plan`, shared by every run on it.
    """
    epochs = int(run["train"]["epochs"])
    trained = epochs * sizes["train"]
    validated = epochs * sizes["val"]
    evaluated = validated + sizes["test"]
    row: dict[str, Any] = {"run": run["id"], "epochs": epochs, "train_images": trained,
                           "eval_images": evaluated, "images_per_s": None, "seconds": None,
                           "train_seconds": None, "source": None}
    if figure is None:
        return row
    row["source"] = figure.get("source", "measured")
    if fast and features.cacheable(run) and "feature_images_per_s" in figure:
        row["feature_set"] = features.feature_key(run)
        row["images_per_s"] = features.HEAD_IMAGES_PER_S
        row["seconds"] = (trained + evaluated) / features.HEAD_IMAGES_PER_S
        row["train_seconds"] = (trained + validated) / features.HEAD_IMAGES_PER_S
        return row
    ips = figure["train_images_per_s"]
    row["images_per_s"] = ips
    row["seconds"] = trained / ips + evaluated / (ips * EVAL_SPEEDUP)
    row["train_seconds"] = trained / ips + validated / (ips * EVAL_SPEEDUP)
    return row


def finished_figures(results: Path | str | None, runs: dict[str, dict], label: str, fast: bool,
                     threads: int) -> dict[str, dict]:
    """Figures from the runs that have finished under `results` (results/runs/<run>/metrics.json), by
    throughput key: the median over the finished runs of a key of the images/s that reproduces their
    measured train_seconds (training and validation, as `run_cost` costs them). Only runs of this
    machine's kind of device and threads (a GPU's model), of this torch, not on cached features."""
    from statistics import median

    from fmnist.plan.cache import _torch_version
    from fmnist.plan.labels import gpu_label, label_matches

    if results is None or not Path(results).is_dir():
        return {}
    speeds: dict[str, list[float]] = {}
    for path in sorted(Path(results).glob("*/metrics.json")):
        try:
            m = json.loads(path.read_text())
            run = m["config"]
            if (m["status"] != "ok" or m.get("cached_features") or not m["train_seconds"]
                    or str(m["versions"].get("torch")).split("+")[0] != _torch_version().split("+")[0]
                    or fast_mode(run, fast)):
                continue
            if label.startswith("cuda"):
                if not label_matches(gpu_label(m["device_name"]), label):
                    continue
            elif m["device"] != "cpu" or not m["device_name"].endswith(f", {threads} threads)"):
                continue
            images = m["epochs_run"] * (m["n_train"] + m["n_val"] / EVAL_SPEEDUP)
            speeds.setdefault(throughput_key(run, label, fast), []).append(images / m["train_seconds"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not a finished run's metrics.json
    wanted = {throughput_key(r, label, fast) for r in runs.values()}
    return {k: {"train_images_per_s": round(median(v), 2), "source": f"finished runs ({len(v)})"}
            for k, v in speeds.items() if k in wanted}


def measure_missing_figures(runs: dict[str, dict], cache: dict, label: str, config: dict, *, fast: bool,
                            remeasure: bool, seconds: float, batch_cap: int | None, log) -> None:
    """Measure, into `cache` (saved after each), the figure of every throughput key of `runs` it lacks
    (all of them with `remeasure`), saying "k of N" before each."""
    todo: dict[str, dict] = {}
    for run in runs.values():
        key = throughput_key(run, label, fast)
        if (remeasure or key not in cache) and key not in todo:
            todo[key] = run
    for k, (key, run) in enumerate(todo.items(), 1):
        aug = run["augmentation"]["name"]
        log(f"[plan] measuring {k} of {len(todo)}: {run['model']['name']} with {aug} (batch "
            f"{run['train']['batch_size']}{', ' + fast_mode(run, fast) if fast_mode(run, fast) else ''}) "
            f"on {label} ...")
        cache[key] = measure(run, config["device"], int(config["threads"]), fast, seconds, batch_cap)
        save_cache(cache)


def plan(config: dict, *, fast: bool = True, measure_missing: bool = False, remeasure: bool = False,
         seconds: float = 2.0, batch_cap: int | None = None, log=print,
         results: Path | str | None = "results/runs") -> dict[str, Any]:
    """Cost rows of every run of `config` (validated), per study and in total.

    A run's figure is, first, the throughput its finished twins under `results` reached (same model,
    batch, numerics and augmentation on this kind of device), else the cached measurement of the
    trainer's steps (measured where missing with `measure_missing`); None where there is neither."""
    from fmnist import experiments

    fmnist_config.validate(config)
    runs, studies = experiments.expand(config)
    label = measuring_label(config) if (measure_missing or remeasure) else plan_label(config)
    cache = load_cache()
    if measure_missing or remeasure:
        measure_missing_figures(runs, cache, label, config, fast=fast, remeasure=remeasure, seconds=seconds,
                                batch_cap=batch_cap, log=log)
    finished = finished_figures(results, runs, label, fast, int(config["threads"]))
    rows: dict[str, dict] = {}
    feature_sets: dict[str, float] = {}
    use_features = fast and config.get("feature_cache", True)
    for rid, run in runs.items():
        figure = finished.get(throughput_key(run, label, fast)) or find_figure(cache, run, label, fast)
        if use_features and figure and features.cacheable(run):
            figure = {**figure, **feature_figure(run, cache, label, config, measure_missing, batch_cap,
                                                 seconds, log)}
        sizes = split_sizes(config["data"], run["train"]["train_fraction"])
        row = rows[rid] = run_cost(run, sizes, figure, use_features)
        if "feature_set" in row:  # one backbone pass over the three splits, shared by the set's runs
            full = split_sizes(config["data"])
            feature_sets[row["feature_set"]] = sum(full.values()) / figure["feature_images_per_s"]
    return summarise(rows, runs, studies, feature_sets, label, fast, int(config["threads"]))


def feature_figure(run: dict, cache: dict, label: str, config: dict, measure_missing: bool,
                   batch_cap: int | None, seconds: float, log) -> dict:
    """The cached speed of `run`'s backbone pass (one figure per feature set, whatever the head's batch),
    measured where missing with `measure_missing`; {} where there is none."""
    fkey = feature_figure_key(run, label)
    if fkey not in cache and measure_missing:
        import torch

        from fmnist.runtime import select_device

        log(f"[plan] measuring the feature pass of {run['model']['name']} on {label} ...")
        torch.set_num_threads(int(config["threads"]))
        cache[fkey] = {"feature_images_per_s": round(features.feature_images_per_second(
            run, select_device(config["device"]), seconds, min(200, batch_cap or 200)), 2)}
        save_cache(cache)
    return cache.get(fkey, {})


def summarise(rows: dict[str, dict], runs: dict[str, dict], studies: dict[str, list[str]],
              feature_sets: dict[str, float], label: str, fast: bool, threads: int) -> dict[str, Any]:
    """The plan's result: its rows, per study (hours None where no run of it has a figure; a lower
    bound, `complete` false, where some lack one) and in total."""
    per_study = {}
    for study, ids in studies.items():
        known = [rows[i]["seconds"] for i in dict.fromkeys(ids) if rows[i]["seconds"] is not None]
        sets = {rows[i]["feature_set"] for i in ids if "feature_set" in rows[i]}
        per_study[study] = {"runs": len(set(ids)), "measured": len(known),
                            "hours": (sum(known) + sum(feature_sets[s] for s in sets)) / 3600 if known else None,
                            "complete": len(known) == len(set(ids))}
    known = [r["seconds"] for r in rows.values() if r["seconds"] is not None]
    total = sum(known) + sum(feature_sets.values())
    # hours of one job on `threads` cores: jobs running side by side each need their own cores
    unit = "GPU-hours" if label.startswith("cuda") else f"hours x {threads} cores"
    return {"device": label, "unit": unit, "fast_paths": fast, "runs": rows, "studies": per_study,
            "feature_sets": {k: v / 3600 for k, v in feature_sets.items()},
            "missing": sorted({runs[r]["model"]["name"] for r, x in rows.items() if x["seconds"] is None}),
            "total_hours": total / 3600 if known else None, "complete": len(known) == len(rows)}

"""Cost: the images each run trains and evaluates, at its model's measured images/s, in hours per run,
per study and in total. Early stopping makes every estimate an upper bound: a run is costed for all
its epochs."""

from __future__ import annotations

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
    """Images and estimated seconds of one run (None where its model has no measured figure).

    A run on cached features (fast, and fmnist.features.cacheable) trains only its head; the backbone
    pass is costed once per feature set by `plan`, shared by every run on it.
    """
    epochs = int(run["train"]["epochs"])
    trained = epochs * sizes["train"]
    evaluated = epochs * sizes["val"] + sizes["test"]
    row: dict[str, Any] = {"run": run["id"], "epochs": epochs, "train_images": trained,
                           "eval_images": evaluated, "images_per_s": None, "seconds": None}
    if figure is None:
        return row
    if fast and features.cacheable(run) and "feature_images_per_s" in figure:
        row["feature_set"] = features.feature_key(run)
        row["images_per_s"] = features.HEAD_IMAGES_PER_S
        row["seconds"] = (trained + evaluated) / features.HEAD_IMAGES_PER_S
        return row
    ips = figure["train_images_per_s"]
    row["images_per_s"] = ips
    row["seconds"] = trained / ips + evaluated / (ips * EVAL_SPEEDUP)
    return row


def plan(config: dict, *, fast: bool = True, measure_missing: bool = False, remeasure: bool = False,
         seconds: float = 2.0, batch_cap: int | None = None, log=print) -> dict[str, Any]:
    """Cost rows of every run of `config` (validated), per study and in total."""
    from fmnist import experiments

    fmnist_config.validate(config)
    runs, studies = experiments.expand(config)
    device, threads = config["device"], int(config["threads"])
    label = measuring_label(config) if (measure_missing or remeasure) else plan_label(config)
    cache = load_cache()
    rows: dict[str, dict] = {}
    feature_sets: dict[str, float] = {}
    use_features = fast and config.get("feature_cache", True)
    for rid, run in runs.items():
        key = throughput_key(run, label, fast)
        if (remeasure or key not in cache) and measure_missing:
            log(f"[plan] measuring {run['model']['name']} (batch {run['train']['batch_size']}"
                f"{', ' + fast_mode(run, fast) if fast_mode(run, fast) else ''}) on {label} ...")
            cache[key] = measure(run, device, threads, fast, seconds, batch_cap)
            save_cache(cache)
        figure = find_figure(cache, run, label, fast)
        if use_features and figure and features.cacheable(run):
            # the backbone pass depends on the feature set, not on the head's batch size: one figure per set
            fkey = feature_figure_key(run, label)
            if fkey not in cache and measure_missing:
                import torch

                from fmnist.runtime import select_device

                log(f"[plan] measuring the feature pass of {run['model']['name']} on {label} ...")
                torch.set_num_threads(threads)
                cache[fkey] = {"feature_images_per_s": round(features.feature_images_per_second(
                    run, select_device(device), seconds, min(200, batch_cap or 200)), 2)}
                save_cache(cache)
            if fkey in cache:
                figure = {**figure, **cache[fkey]}
        sizes = split_sizes(config["data"], run["train"]["train_fraction"])
        row = rows[rid] = run_cost(run, sizes, figure, use_features)
        if "feature_set" in row:  # one backbone pass over the three splits, shared by the set's runs
            full = split_sizes(config["data"])
            feature_sets[row["feature_set"]] = sum(full.values()) / figure["feature_images_per_s"]
    per_study = {}
    for study, ids in studies.items():
        known = [rows[i]["seconds"] for i in dict.fromkeys(ids) if rows[i]["seconds"] is not None]
        sets = {rows[i]["feature_set"] for i in ids if "feature_set" in rows[i]}
        per_study[study] = {"runs": len(set(ids)), "measured": len(known),
                            "hours": (sum(known) + sum(feature_sets[s] for s in sets)) / 3600}
    total = sum(r["seconds"] for r in rows.values() if r["seconds"] is not None) + sum(feature_sets.values())
    # hours of one job on `threads` cores: jobs running side by side each need their own cores
    unit = "GPU-hours" if label.startswith("cuda") else f"hours x {threads} cores"
    return {"device": label, "unit": unit, "fast_paths": fast, "runs": rows, "studies": per_study,
            "feature_sets": {k: v / 3600 for k, v in feature_sets.items()},
            "missing": sorted({runs[r]["model"]["name"] for r, x in rows.items() if x["seconds"] is None}),
            "total_hours": total / 3600}

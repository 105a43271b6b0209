"""Snakemake job sizes from the cached figures: the runtime and mem_mb a training or features job asks
a scheduler for, its planned GPU memory, and the message for runs without figures. No torch, no
measuring: the workflow calls these while it parses."""

from __future__ import annotations

import math

from fmnist.plan.cache import (
    cache_path,
    fast_paths_enabled,
    feature_figure_key,
    find_figure,
    load_cache,
)
from fmnist.plan.cost import run_cost, split_sizes
from fmnist.plan.labels import measure_command, plan_label

SAFETY = 2.0
"""Requested runtime = estimate x SAFETY x attempt (a retry after a time-out asks for more)."""
OVERHEAD_MINUTES = 5
"""Start-up, data loading and the final evaluation's files, per training job."""
DEFAULT_RUNTIME_MINUTES = 120
"""Runtime of a job whose model has no measured figure (per attempt)."""
BASE_MEM_MB = 2000
"""Python, torch and the dataset held in memory (47 MB as uint8, a few float copies)."""
DEFAULT_MEM_MB = 8000


def _job_size(seconds: float, model_mb: float, attempt: int) -> dict[str, int]:
    """A job's runtime (minutes) and mem_mb from its estimated seconds and model memory: both x SAFETY,
    plus the fixed overhead and base memory, growing with `attempt`."""
    runtime = math.ceil(seconds * SAFETY * attempt / 60) + OVERHEAD_MINUTES
    return {"runtime": runtime, "mem_mb": math.ceil((BASE_MEM_MB + model_mb * SAFETY) * attempt)}


FEATURE_BATCH = 200
"""The batch of a feature pass (fmnist.features.compute's default)."""


def feature_resources(run: dict, config: dict, attempt: int = 1, cache: dict | None = None) -> dict[str, int]:
    """runtime (minutes) and mem_mb of the features job of `run`'s feature set: one backbone pass over
    the three splits at the measured feature images/s, weights and activations of inference; the
    defaults where `plan` has not measured that pass (on the GPU model `plan_device` names, else here)."""
    cache = load_cache() if cache is None else cache
    label = plan_label(config)
    figure = find_figure(cache, run, label, fast_paths_enabled())
    feature = cache.get(feature_figure_key(run, label))
    if figure is None or feature is None:
        return {"runtime": DEFAULT_RUNTIME_MINUTES * attempt, "mem_mb": DEFAULT_MEM_MB * attempt}
    seconds = sum(split_sizes(config["data"]).values()) / feature["feature_images_per_s"]
    model_mb = (figure["params"] * 4 + figure["activation_bytes_per_image"] * FEATURE_BATCH) / 2**20
    return _job_size(seconds, model_mb, attempt)


def resources(run: dict, config: dict, attempt: int = 1, cache: dict | None = None) -> dict[str, int]:
    """runtime (minutes) and mem_mb of a training job, from the cached figures; no torch, no measuring.

    The figures are those of the GPU model `plan_device` names, else this machine's (plan_label).
    Both grow with `attempt`, so a job killed at its limit comes back asking for more.
    """
    cache = load_cache() if cache is None else cache
    figure = find_figure(cache, run, plan_label(config), fast_paths_enabled())
    if figure is None:
        return {"runtime": DEFAULT_RUNTIME_MINUTES * attempt, "mem_mb": DEFAULT_MEM_MB * attempt}
    sizes = split_sizes(config["data"], run["train"]["train_fraction"])
    # the run's own figure has no feature pass merged in, so a run on cached features asks for what the
    # full model would need: more than its head needs, never less
    seconds = run_cost(run, sizes, figure, fast=fast_paths_enabled() and config.get("feature_cache", True))["seconds"]
    batch = max(int(run["train"]["batch_size"]), int(run["train"]["eval_batch_size"]))
    model_mb = (figure["params"] * 16 + figure["activation_bytes_per_image"] * batch) / 2**20
    return _job_size(seconds, model_mb, attempt)


def unmeasured_models(runs: dict[str, dict], config: dict, cache: dict[str, dict]) -> list[str]:
    """Models of `runs` with no figure on the config's plan device (their jobs get the defaults)."""
    label, fast = plan_label(config), fast_paths_enabled()
    return sorted({r["model"]["name"] for r in runs.values() if find_figure(cache, r, label, fast) is None})


def missing_figures_message(runs: dict[str, dict], config: dict, cache: dict[str, dict],
                            configfile: str) -> str | None:
    """One message for the runs whose jobs will ask for the defaults, with the command that measures
    them; None when every run has its figure."""
    models = unmeasured_models(runs, config, cache)
    if not models:
        return None
    n = sum(1 for r in runs.values() if r["model"]["name"] in models)
    where = (f"the GPU model plan_device={config['plan_device']!r} names" if config.get("plan_device")
             else f"this machine ({plan_label(config)}; set --config plan_device=<gpu model> to size jobs "
                  f"for the GPU they will run on)")
    return (f"fmnist: the cost plan has no figures for {n} of {len(runs)} training runs on {where}: "
            f"{', '.join(models)}. Their jobs ask for {DEFAULT_RUNTIME_MINUTES} min and {DEFAULT_MEM_MB} MB "
            f"per attempt. Measure them once on a compute node with that GPU: {measure_command(configfile)} "
            f"(the figures go to {cache_path()}, which this machine must see: a shared home, or "
            f"FMNIST_CACHE_DIR on a shared file system).")


GPU_JOB_DEFAULT_MB = 4_000
"""Planned GPU memory of a training job whose model has no measured figure."""
GPU_DATA_MB = 200
"""The splits held on the GPU as uint8 (47 MB for all of Fashion-MNIST) and their float batches."""


def gpu_mem_mb(run: dict, config: dict, cache: dict | None = None) -> float:
    """Planned GPU memory of a training job (MB): parameters, gradients and Adam's two moments (16 bytes
    per parameter), the activations autograd saves for the larger of the training and evaluation batch,
    the data, all times SAFETY; a default where the model has no measured figure. No torch, no measuring."""
    cache = load_cache() if cache is None else cache
    figure = find_figure(cache, run, plan_label(config), fast_paths_enabled())
    if figure is None:
        return GPU_JOB_DEFAULT_MB
    batch = max(int(run["train"]["batch_size"]), int(run["train"]["eval_batch_size"]))
    model_mb = (figure["params"] * 16 + figure["activation_bytes_per_image"] * batch) / 2**20
    return GPU_DATA_MB + model_mb * SAFETY


def gpu_need_mb(run: dict, config: dict, cache: dict | None = None) -> float:
    """What a training job takes of one GPU's memory (MB): its planned memory (`gpu_mem_mb`) and the
    CUDA context its process pays (fmnist.gpus.CUDA_CONTEXT_MB). A pack holds one process per run, so
    its runs' needs add up to what the pack takes of its GPU."""
    from fmnist import gpus as fmnist_gpus

    return gpu_mem_mb(run, config, cache) + fmnist_gpus.CUDA_CONTEXT_MB


# ---------------------------------------------------------------------------------------------
# wall-clock hours on a machine: G GPUs packed with jobs, or C cores

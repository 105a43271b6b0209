"""Cost plan: images each run trains, measured images/s of its model on this device, estimated hours;
and the runtime/mem_mb a training job asks a scheduler for, from the same figures.

The throughput figures are measured once per (device, model, batch size, fast paths) and kept in a
JSON cache outside the repository ($FMNIST_CACHE_DIR or ~/.cache/fmnist/throughput.json), so that
Snakemake can read them while it parses (no torch import, no measuring there). A run whose figure is
not cached gets a conservative default for its resources. Early stopping makes every estimate an
upper bound: a run is costed for all its epochs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import platform
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from fmnist import config as fmnist_config
from fmnist import features
from fmnist import gpus as fmnist_gpus

FULL_TRAIN_IMAGES = 60_000
FULL_TEST_IMAGES = 10_000
EVAL_SPEEDUP = 3.0
"""An evaluation forward pass costs about a third of a training step (forward + backward)."""
SAFETY = 2.0
"""Requested runtime = estimate x SAFETY x attempt (a retry after a time-out asks for more)."""
OVERHEAD_MINUTES = 5
"""Start-up, data loading and the final evaluation's files, per training job."""
DEFAULT_RUNTIME_MINUTES = 120
"""Runtime of a job whose model has no measured figure (per attempt)."""
BASE_MEM_MB = 2000
"""Python, torch and the dataset held in memory (47 MB as uint8, a few float copies)."""
DEFAULT_MEM_MB = 8000


def cache_path() -> Path:
    root = os.environ.get("FMNIST_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fmnist"
    )
    return Path(root) / "throughput.json"


GPU_WORDS_DROPPED = ("nvidia", "tesla", "geforce")


def gpu_slug(name: str) -> str:
    """A GPU's model as a plan key: `NVIDIA H200` -> `h200`, `NVIDIA A100-SXM4-80GB` -> `a100-sxm4-80gb`.

    The config key `plan_device` names a model by this slug or its first part (`a100` matches every
    A100 variant)."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and w not in GPU_WORDS_DROPPED]
    return "-".join(words)


def local_gpu_model(root: Path = Path("/proc/driver/nvidia/gpus")) -> str | None:
    """The first NVIDIA GPU's model name from the driver's /proc files (no torch, no nvidia-smi)."""
    try:
        for info in sorted(root.glob("*/information")):
            for line in info.read_text().splitlines():
                if line.startswith("Model:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.cache  # read for every train job's resources while the DAG is built
def device_label(device: str = "auto", threads: int = 1) -> str:
    """This machine's compute as a cache key, found without importing torch.

    A GPU is keyed by its model (`cuda h200`), so figures measured on one GPU model never size jobs
    for another; `cuda` alone where the driver does not say (the measuring process refines it)."""
    if fmnist_gpus.target_kind(device) == "cuda":
        model = local_gpu_model()
        return gpu_label(model) if model else "cuda"
    model = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu {model}, {threads} threads"


def gpu_label(model: str) -> str:
    return f"cuda {gpu_slug(model)}"


def plan_label(config: dict) -> str:
    """The label whose figures size this config's jobs: the GPU model `plan_device` names (so a login
    node without a GPU sizes jobs for the GPU they will run on), else this machine's."""
    if config.get("plan_device"):
        return gpu_label(config["plan_device"])
    return device_label(config["device"], int(config["threads"]))


def label_matches(label: str, wanted: str) -> bool:
    """A cached figure's label serves a wanted one: equal, or a variant of the GPU model it names."""
    return label == wanted or (wanted.startswith("cuda ") and label.startswith(wanted + "-"))


def find_figure(cache: dict[str, dict], run: dict, label: str, fast: bool) -> dict | None:
    """The run's cached figure on `label`; of several variants of a GPU model, the slowest
    (`a100` with figures for both A100 40GB and 80GB: a job may land on either)."""
    exact = cache.get(throughput_key(run, label, fast))
    if exact is not None or not label.startswith("cuda "):
        return exact
    rest = throughput_key(run, "", fast)
    found = [v for k, v in cache.items()
             if k.endswith(rest) and label_matches(k[: len(k) - len(rest)], label)]
    return min(found, key=lambda v: v["train_images_per_s"]) if found else None


def _torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "none"


def fast_mode(run: dict, fast: bool) -> str:
    """The fast paths that change this run's cost: `deform` (fast CPU deformable conv) for deformable models."""
    from fmnist import models

    if models.get_preset(run["model"]["arch"]).module == "deformable":
        return "deform_fast" if fast else "deform_torchvision"
    return ""


def throughput_key(run: dict, label: str, fast: bool) -> str:
    m = run["model"]
    args = {k: v for k, v in m["args"].items() if k not in ("weights_path", "pretrained", "input_mean", "input_std")}
    return "|".join([label, f"torch {_torch_version()}", m["arch"],
                     json.dumps(args, sort_keys=True, separators=(",", ":")),
                     f"batch {run['train']['batch_size']}", fast_mode(run, fast)])


def load_cache(path: Path | None = None) -> dict[str, dict]:
    path = path or cache_path()
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def save_cache(cache: dict[str, dict], path: Path | None = None) -> None:
    path = path or cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
    tmp.replace(path)  # atomic: a reader (a parsing Snakemake) never sees half a file


def split_sizes(data_cfg: dict, train_fraction: float = 1.0) -> dict[str, int]:
    """Images in the train, val and test splits a run uses (the prepared file's sizes, computed)."""
    pool = data_cfg.get("train_limit") or FULL_TRAIN_IMAGES
    val = round(pool * data_cfg.get("val_fraction", 0.1))
    train = round((pool - val) * train_fraction)
    return {"train": train, "val": val, "test": data_cfg.get("test_limit") or FULL_TEST_IMAGES}


def measure(run: dict, device: str, threads: int, fast: bool, seconds: float = 2.0,
            batch_cap: int | None = None) -> dict:
    """Measure a run's model: training images/s at its batch size, activation bytes per image, parameters.

    `batch_cap` measures at most that many images per step (the figure then stands for the run's
    batch size): for large models on a slow device, where a step at the full batch takes minutes."""
    import torch

    from fmnist import models
    from fmnist.models import deform_ops
    from fmnist.models import measure as model_measure
    from fmnist.runtime import device_name, select_device

    torch.set_num_threads(threads)
    dev = select_device(device)
    m = run["model"]
    args = {**m["args"], "pretrained": False, "weights_path": None} if m["arch"] in models.TRANSFER_WEIGHTS \
        else m["args"]
    torch.manual_seed(0)
    model = models.build_model(m["arch"], args)
    params, _ = model_measure.count_params(model)
    batch = int(run["train"]["batch_size"])
    if batch_cap:
        batch = min(batch, int(batch_cap))
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    model.to(dev).train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.randn(batch, 1, 28, 28, device=dev)).sum().backward()
    model.zero_grad(set_to_none=True)
    ctx = deform_ops.torchvision_kernel() if not fast else contextlib.nullcontext()
    with ctx:
        ips, steps = model_measure.train_images_per_second(model, dev, batch, seconds)
    row = {"train_images_per_s": round(ips, 2), "steps": steps, "params": params,
           "activation_bytes_per_image": saved[0] // batch, "device_name": device_name(dev),
           "measured_batch": batch,
           "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return row


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


def _job_size(seconds: float, model_mb: float, attempt: int) -> dict[str, int]:
    """A job's runtime (minutes) and mem_mb from its estimated seconds and model memory: both x SAFETY,
    plus the fixed overhead and base memory, growing with `attempt`."""
    runtime = math.ceil(seconds * SAFETY * attempt / 60) + OVERHEAD_MINUTES
    return {"runtime": runtime, "mem_mb": math.ceil((BASE_MEM_MB + model_mb * SAFETY) * attempt)}


def feature_figure_key(run: dict, label: str) -> str:
    """The cache key of the speed of `run`'s backbone pass on `label`: keyed by what sets it (the backbone
    and its arguments, the amp a job uses on that kind of device, channels_last), not by the seed or
    the normalisation; so `plan` (which measures unresolved runs) and the workflow (whose runs have their
    amp resolved for the jobs' device) name the same figure."""
    kind = "cuda" if label.startswith("cuda") else "cpu"
    t = run["train"]
    what = {"arch": run["model"]["arch"], "args": run["model"]["args"],
            "amp": fmnist_gpus.resolve_amp(t["amp"], kind), "channels_last": t["channels_last"]}
    return f"{label}|torch {_torch_version()}|features|{json.dumps(what, sort_keys=True, separators=(',', ':'))}"


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


def measuring_label(config: dict) -> str:
    """The label figures measured on this machine are stored under: its GPU model as torch names it
    where the driver's files did not. A config whose `plan_device` names another GPU is refused: its
    figures would size jobs for the wrong model."""
    here = device_label(config["device"], int(config["threads"]))
    if here == "cuda":
        import torch

        if torch.cuda.is_available():
            here = gpu_label(torch.cuda.get_device_name(0))
    if config.get("plan_device") and not label_matches(here, plan_label(config)):
        raise fmnist_config.ConfigError(
            f"plan_device is {config['plan_device']!r} but this machine measures on {here!r}: measure on a "
            f"node with that GPU ({measure_command('<configfile>')}), or drop plan_device to plan for this machine")
    return here


def measure_command(configfile: str) -> str:
    """The command that measures the figures on a compute node (one GPU, a few minutes)."""
    return f"srun --gpus=1 --time=60 python -m fmnist plan --configfile {configfile}"


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


def fast_paths_enabled() -> bool:
    """The fast paths a training job will take (FMNIST_FAST_DEFORM, read without importing torch)."""
    return os.environ.get("FMNIST_FAST_DEFORM", "1") != "0"


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


# ---------------------------------------------------------------------------------------------
# wall-clock hours on a machine: G GPUs packed with jobs, or C cores
# ---------------------------------------------------------------------------------------------

PACKED_SPEEDUP = ((1, 1.0), (12, 5.95))
"""(jobs side by side on one GPU, their combined speed against one job alone), interpolated linearly
and flat past the last point. One measurement so far: the default study's 12 runs on an H200 took
~250 s one at a time and 42 s side by side (docs/performance.md, GPUs); `fmnist bench gpu` measures it."""


def packed_speedup(n: int, curve: tuple[tuple[int, float], ...] = PACKED_SPEEDUP) -> float:
    """Combined speed of `n` jobs sharing one GPU, relative to one job alone (from `curve`)."""
    if n <= curve[0][0]:
        return curve[0][1]
    for (n0, s0), (n1, s1) in zip(curve, curve[1:], strict=False):
        if n <= n1:
            return s0 + (s1 - s0) * (n - n0) / (n1 - n0)
    return curve[-1][1]


def makespan(jobs: list[tuple[float, int]], devices: int, slots: int,
             speedup=packed_speedup) -> float:
    """Seconds until the last of `jobs` ends, (seconds alone, slots it needs) each, on `devices` GPUs
    of `slots` slots: longest first, each onto the GPU where its slots free up soonest (a greedy list
    schedule). A job that shares its GPU runs slower: with n = slots // its slots jobs of its kind side
    by side, each runs at speedup(n) / n of its speed alone (so the GPU as a whole at speedup(n))."""
    if devices < 1 or slots < 1:
        raise ValueError("a machine needs at least one GPU (or lane) and one slot")
    free = [[0.0] * slots for _ in range(devices)]
    end = 0.0
    for seconds, want in sorted(jobs, key=lambda j: -j[0]):
        want = max(1, min(int(want), slots))
        n = slots // want
        duration = seconds * n / speedup(n)
        starts = [sorted(f)[want - 1] for f in free]
        g = min(range(devices), key=starts.__getitem__)
        start = starts[g]
        taken = sorted(range(slots), key=free[g].__getitem__)[:want]
        for s in taken:
            free[g][s] = start + duration
        end = max(end, start + duration)
    return end


def wall_clock(result: dict, config: dict, *, gpus: int = 1, slots: int | None = None,
               gpu_memory_mb: int | None = None, cores: int | None = None, cache: dict | None = None) -> dict:
    """Wall-clock hours of each study of a `plan` result, and of all runs, on one machine.

    On CUDA: `gpus` GPUs, each carrying jobs side by side as the workflow packs them (`slots` per GPU,
    each job the slots its planned memory needs; fmnist.gpus), sped up by `PACKED_SPEEDUP`. On a CPU:
    `cores` // threads jobs side by side, each at its measured speed (its own cores). Feature passes
    count as jobs; the wait of a head-only run for its features is not modelled, nor early stopping
    (an upper bound, as the hours are). Runs without a measured figure are left out, as in the hours.
    """
    from fmnist import experiments
    from fmnist import gpus as fmnist_gpus

    runs, studies = experiments.expand(config_copy(config))
    cache = load_cache() if cache is None else cache
    on_gpu = result["device"].startswith("cuda")
    if on_gpu:
        memory = gpu_memory_mb or min((m for _, m in fmnist_gpus.visible_gpus()),
                                      default=fmnist_gpus.DEFAULT_GPU_MEM_MB)
        pack = fmnist_gpus.Packing(tuple(str(i) for i in range(gpus)), int(memory),
                                   int(slots or fmnist_gpus.DEFAULT_SLOTS))
        devices, per, speed = gpus, pack.slots, packed_speedup

        def want(run):
            return pack.job_slots(gpu_mem_mb(run, config, cache))
        feature_want = pack.job_slots(fmnist_gpus.FEATURE_JOB_MB)
    else:
        lanes = max(1, int(cores or os.cpu_count() or 1) // int(config["threads"]))
        devices, per, speed = 1, lanes, float

        def want(_run):
            return 1
        feature_want = 1

    def jobs_of(ids) -> list[tuple[float, int]]:
        rows = [result["runs"][i] for i in dict.fromkeys(ids)]
        out = [(r["seconds"], want(runs[r["run"]])) for r in rows if r["seconds"] is not None]
        sets = {r["feature_set"] for r in rows if "feature_set" in r}
        return out + [(result["feature_sets"][s] * 3600, feature_want) for s in sets]

    per_study = {s: makespan(jobs_of(ids), devices, per, speed) / 3600 for s, ids in studies.items()}
    total = makespan(jobs_of(list(runs)), devices, per, speed) / 3600
    machine = (f"{gpus} GPU(s) x {per} slots of {pack.memory_mb // per} MB" if on_gpu
               else f"{per} jobs side by side on {per * int(config['threads'])} cores")
    return {"machine": machine, "studies": per_study, "total_hours": total}


def config_copy(config: dict) -> dict:
    return json.loads(json.dumps(config))

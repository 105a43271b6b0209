"""steps: one training step of the trainer (`StepLoop.step`) in several numerics and launch modes."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from fmnist.bench.common import (
    DEFAULT_CONFIG,
    DEFAULT_DATA,
    check_data,
    configure_device,
    ms_per_step,
    resolve_one,
)
from fmnist.config import ConfigError

STEP_VARIANTS = {
    "fp32": {"amp": "off"},
    "bf16": {"amp": "bf16"},
    "compile": {"amp": "bf16", "compile": True},
    "compile_reduce_overhead": {"amp": "bf16", "compile": "reduce-overhead"},
    "cuda_graph": {"amp": "bf16", "cuda_graph": True},
}
CPU_STEP_VARIANTS = ("fp32", "bf16")
CUDA_STEP_VARIANTS = ("bf16", "compile", "compile_reduce_overhead", "cuda_graph")


def _step_loop(run: dict, variant: str, split, dev):
    import torch

    from fmnist import train

    overrides = dict(STEP_VARIANTS[variant])
    mode = overrides.pop("compile") if overrides.get("compile") == "reduce-overhead" else None
    r = json.loads(json.dumps(run))
    r["train"].update(overrides)
    torch.manual_seed(0)
    loop = train.StepLoop.build(r, 10, len(split), dev)
    if mode:
        loop.step_model = torch.compile(loop.model, mode=mode)
    return loop


def steps(model: str = "standard_cnn", device: str = "auto", variants: list[str] | None = None,
          data: Path | str = DEFAULT_DATA, configfile: Path | str = DEFAULT_CONFIG, batch_size: int = 64,
          n_steps: int = 100, warmup: int = 10, repeats: int = 3, threads: int = 2, log=print) -> dict:
    """Milliseconds per training step of fmnist's trainer (`StepLoop.step`, the config's recipe for
    `model`, no augmentation) in each variant: fp32/bf16 on a CPU; eager, compiled, compiled with
    reduce-overhead and CUDA-graphed (all bf16) on CUDA. Variants alternate per repeat; medians."""

    from fmnist import train
    from fmnist.data import load_prepared

    data = check_data(data)
    dev = configure_device(device, threads)
    variants = list(variants or (CUDA_STEP_VARIANTS if dev.type == "cuda" else CPU_STEP_VARIANTS))
    unknown = [v for v in variants if v not in STEP_VARIANTS]
    if unknown:
        raise ConfigError(f"unknown step variant(s) {', '.join(unknown)}: use {', '.join(STEP_VARIANTS)}")
    if dev.type != "cuda" and any(v not in CPU_STEP_VARIANTS for v in variants):
        raise ConfigError(f"variants {', '.join(v for v in variants if v not in CPU_STEP_VARIANTS)} need CUDA")
    # no schedule: a per-batch one (the default study's one-cycle) would run out of steps over the repeats
    run = resolve_one(configfile, model, "none", train={"batch_size": batch_size, "scheduler": {"name": "none"}})
    arrays, _ = load_prepared(data)
    split = train.Batches(arrays["train_images"], arrays["train_labels"], dev)
    if (n_steps + warmup) * batch_size > len(split):
        raise ConfigError(f"{n_steps + warmup} steps of {batch_size} need more images than the data file has")
    loops = {v: _step_loop(run, v, split, dev) for v in variants}

    def timed(loop) -> float:
        return ms_per_step(lambda i: loop.step(split.images[i * batch_size:(i + 1) * batch_size],
                                                split.labels[i * batch_size:(i + 1) * batch_size]),
                            warmup, n_steps, dev)

    samples: dict[str, list[float]] = {v: [] for v in variants}
    for rep in range(repeats):
        for v in variants:
            samples[v].append(timed(loops[v]))
            log(f"[bench] repeat {rep + 1}/{repeats} {v:24s} {samples[v][-1]:8.3f} ms/step")
    ms = {v: statistics.median(s) for v, s in samples.items()}
    base = variants[0]
    return {
        "model": model, "device": str(dev), "device_name": train.device_name(dev), "threads": threads,
        "batch_size": batch_size, "steps": n_steps, "repeats": repeats,
        "ms_per_step": {v: round(x, 3) for v, x in ms.items()},
        "images_per_s": {v: round(batch_size / x * 1000, 1) for v, x in ms.items()},
        "speedup_vs_" + base: {v: round(ms[base] / x, 2) for v, x in ms.items()},
        "samples": {v: [round(x, 3) for x in s] for v, s in samples.items()},
        "load_average": list(os.getloadavg()),
    }

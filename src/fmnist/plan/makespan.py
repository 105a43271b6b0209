"""Wall-clock hours on a machine: G GPUs packed with jobs side by side, or C cores; a greedy list
schedule of a plan's jobs."""

from __future__ import annotations

import json
import os

from fmnist.plan.cache import load_cache
from fmnist.plan.jobs import gpu_mem_mb

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

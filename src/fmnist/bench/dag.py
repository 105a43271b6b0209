"""dag: Snakemake's planning time on a study and the start-up cost of one training job."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fmnist.bench.common import DEFAULT_CONFIG, DEFAULT_DATA, FULL_CONFIG, check_data, child_env
from fmnist.config import REPO_ROOT

_STARTUP_CHILD = r"""
import json, sys, time
t = {"start": time.time()}
import torch
t["torch"] = time.time()
from fmnist import data, train
t["fmnist"] = time.time()
run, path, threads = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(run["seed"])
dev = train.select_device("cpu")
arrays, meta = data.load_prepared(path)
tr = train.Batches(arrays["train_images"], arrays["train_labels"], dev)
val = train.Batches(arrays["val_images"], arrays["val_labels"], dev)
t["data"] = time.time()
loop = train.StepLoop.build(run, len(meta["classes"]), len(tr), dev)
t["build"] = time.time()
loop.epoch(tr, 1, max_steps=1)
t["step"] = time.time()
print(json.dumps(t))
"""


def startup_cost(run: dict, data: Path | str, threads: int = 2, repeats: int = 3) -> dict:
    """Seconds from spawning a training process to its first finished step, by phase (medians)."""
    env = child_env()
    phases: dict[str, list[float]] = {}
    for _ in range(repeats):
        t_spawn = time.time()
        proc = subprocess.run([sys.executable, "-c", _STARTUP_CHILD, json.dumps(run), str(data), str(threads)],
                              capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"start-up probe failed:\n{proc.stderr[-3000:]}")
        t = json.loads(proc.stdout.strip().splitlines()[-1])
        marks = [("interpreter", t_spawn, t["start"]), ("import torch", t["start"], t["torch"]),
                 ("import fmnist", t["torch"], t["fmnist"]),
                 ("data load", t["fmnist"], t["data"]), ("model + optimizer (imports torch._dynamo)", t["data"], t["build"]),
                 ("first step", t["build"], t["step"]), ("total", t_spawn, t["step"])]
        for name, a, b in marks:
            phases.setdefault(name, []).append(b - a)
    return {k: round(statistics.median(v), 3) for k, v in phases.items()}


def dag(configfile: Path | str = FULL_CONFIG, default_config: Path | str = DEFAULT_CONFIG,
        data: Path | str = DEFAULT_DATA, repeats: int = 3, threads: int = 2,
        workdir: Path | str = REPO_ROOT, log=print) -> dict:
    """Time `snakemake -n` on `configfile` (run in `workdir`, a checkout of the workflow) and the
    per-job start-up of the default study's first run."""
    from fmnist import config, experiments

    snakemake = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))
    cmd = [snakemake, "-n", "--cores", "1", "--configfile", str(configfile)]
    env = child_env()
    seconds, jobs = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, check=False)
        seconds.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        for line in (proc.stdout + proc.stderr).splitlines():
            parts = line.split()
            if parts[:1] == ["total"] and len(parts) == 2 and parts[1].isdigit():
                jobs = int(parts[1])
        log(f"[bench] snakemake -n: {seconds[-1]:.2f}s")
    runs, _ = experiments.expand(config.load(default_config))
    first = next(iter(runs.values()))
    startup = startup_cost(first, check_data(data), threads=threads, repeats=repeats)
    return {
        "snakemake_dry_run_seconds": round(statistics.median(seconds), 3),
        "snakemake_samples": [round(s, 3) for s in seconds],
        "configfile": str(configfile), "planned_jobs": jobs,
        "training_runs": len(experiments.expand(config.load(Path(workdir) / configfile))[0]),
        "startup_run": first["id"], "startup_seconds": startup,
        "load_average": list(os.getloadavg()),
    }

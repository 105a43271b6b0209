"""speedrun: a fixed schedule on all 60,000 training images (train + val), test accuracy once at the end.

Each seed trains through the trainer's own entry points: `train.setup_run` (threads, device and its
backend flags, seed, data on the device, the step loop) on a prepared file whose training split is
train + val, then `StepLoop.epoch` once per epoch and `RunSetup.evaluate` on the test split.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fmnist.bench.common import DEFAULT_DATA, SPEEDRUN_CONFIG, check_data
from fmnist.config import ConfigError


def speedrun_runs(configfile: Path | str, seeds: list[int] | None, epochs: int | None) -> dict[str, dict]:
    """The resolved runs of the config's `speedrun` study, with `seeds` and `epochs` overridden."""
    from fmnist import config, experiments

    cfg = config.load(configfile)
    if "speedrun" not in cfg["studies"]:
        raise ConfigError(f"{configfile} has no `speedrun` study; see config/speedrun.yaml")
    cfg["studies"] = {"speedrun": cfg["studies"]["speedrun"]}
    if seeds is not None:
        cfg["studies"]["speedrun"]["seeds"] = list(seeds)
    if epochs is not None:
        cfg["defaults"]["epochs"] = int(epochs)
    runs, _ = experiments.expand(cfg)
    return runs


def train_plus_val(data: Path, folder: Path) -> tuple[Path, dict]:
    """A copy of the prepared file whose training split is train + val (the fixed schedule needs no
    validation split), written into `folder`; and its arrays."""
    from fmnist.data import load_prepared

    arrays, meta = load_prepared(data)
    for kind in ("images", "labels", "index"):
        arrays[f"train_{kind}"] = np.concatenate([arrays[f"train_{kind}"], arrays[f"val_{kind}"]])
    path = folder / "train_plus_val.npz"
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return path, arrays


def speedrun_one(run: dict, data: Path, device: str, threads: int, log) -> dict:
    """Train one run of the recipe (wall time from its setup to its test accuracy)."""
    from fmnist import train

    t0 = time.perf_counter()
    s = train.setup_run(run, data, device=device, threads=threads)
    for epoch in range(1, run["train"]["epochs"] + 1):
        loss_sum, _, seen, reason = s.loop.epoch(s.train, epoch)
        if reason:
            raise RuntimeError(f"[{run['id']}] diverged: {reason}")
        log(f"[speedrun] {run['id']} epoch {epoch}/{run['train']['epochs']} "
            f"train_loss {float(loss_sum) / seen:.4f} {time.perf_counter() - t0:.1f}s")
    test = train.Batches(s.arrays["test_images"], s.arrays["test_labels"], s.dev)
    test_loss, test_acc, _ = s.evaluate(test)
    seconds = time.perf_counter() - t0
    log(f"[speedrun] {run['id']} test accuracy {test_acc:.4f} in {seconds:.1f}s")
    return {"seed": run["seed"], "seconds": round(seconds, 2), "test_accuracy": test_acc,
            "test_loss": test_loss, "device": str(s.dev), "device_name": train.device_name(s.dev),
            "n_train": len(s.train), "n_test": len(test)}


def speedrun(data: Path | str = DEFAULT_DATA, configfile: Path | str = SPEEDRUN_CONFIG,
             seeds: list[int] | None = None, epochs: int | None = None, device: str = "auto",
             threads: int = 2, log=print) -> dict:
    """Train the `speedrun` study's recipe once per seed on train + val; wall time and test accuracy."""
    data = check_data(data)
    runs = speedrun_runs(configfile, seeds, epochs)
    with tempfile.TemporaryDirectory(prefix="fmnist-speedrun-") as tmp:
        path, _ = train_plus_val(data, Path(tmp))
        results = [speedrun_one(run, path, device, threads, log) for run in runs.values()]
    first, last = next(iter(runs.values())), results[-1]
    return {
        "model": first["model"]["name"], "device": last["device"], "device_name": last["device_name"],
        "threads": threads, "epochs": first["train"]["epochs"], "n_train": last["n_train"],
        "n_test": last["n_test"],
        "runs": [{k: r[k] for k in ("seed", "seconds", "test_accuracy", "test_loss")} for r in results],
        "mean_seconds": round(statistics.mean(r["seconds"] for r in results), 2),
        "mean_test_accuracy": round(statistics.mean(r["test_accuracy"] for r in results), 4),
        "load_average": list(os.getloadavg()),
    }

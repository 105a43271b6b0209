"""Benchmarks: fmnist's trainer against the reports' DataLoader loop, the speedrun recipe, and pipeline overhead.

Every figure is a median over repetitions; the two loops of `throughput` alternate (a, b, a, b, ...)
so that load from other processes on the machine hits both alike and their ratio stays meaningful.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fmnist.config import REPO_ROOT, ConfigError

DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
SPEEDRUN_CONFIG = REPO_ROOT / "config" / "speedrun.yaml"
FULL_CONFIG = REPO_ROOT / "config" / "full.yaml"
DEFAULT_DATA = Path("data/prepared/fashion_mnist.npz")


def _check_data(path: Path | str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"no prepared data at {path}: run `python -m fmnist download && python -m fmnist prepare` "
            "(or `snakemake --cores 1 data/prepared/fashion_mnist.npz`), or pass --data"
        )
    return path


def resolve_one(configfile: Path | str, model: str, augmentation: str, seed: int = 0,
                train: dict | None = None) -> dict:
    """The resolved run (model, augmentation, `default` setting, seed) of a config, with `train` overrides."""
    from fmnist import config, experiments

    cfg = config.load(configfile)
    cfg["defaults"] = config.deep_merge(cfg.get("defaults", {}), train or {})
    cfg["studies"] = {"bench": {"models": [model], "augmentations": [augmentation],
                                "settings": ["default"], "seeds": [seed]}}
    runs, _ = experiments.expand(cfg)
    return next(iter(runs.values()))


# --------------------------------------------------------------------------------------------
# throughput: the reports' loop (a) against fmnist's trainer (b)
# --------------------------------------------------------------------------------------------

def write_idx(path: Path, array: np.ndarray) -> None:
    """An uint8 IDX file (the format torchvision's FashionMNIST reads) holding `array`."""
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def torchvision_root(arrays: dict, root: Path) -> Path:
    """Lay the prepared train/test splits out as torchvision expects them: <root>/FashionMNIST/raw/."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    write_idx(raw / "train-images-idx3-ubyte", arrays["train_images"])
    write_idx(raw / "train-labels-idx1-ubyte", arrays["train_labels"])
    write_idx(raw / "t10k-images-idx3-ubyte", arrays["test_images"])
    write_idx(raw / "t10k-labels-idx1-ubyte", arrays["test_labels"])
    return root


def reference_transform(run: dict):
    """The reports' per-image PIL pipeline (report D's flip + affine for `flip_affine`)."""
    from torchvision import transforms

    norm = run["train"]["normalize"]
    steps = []
    aug = run["augmentation"]
    if aug["kind"] == "flip_affine":
        p = aug["params"]
        steps += [transforms.RandomHorizontalFlip(p["flip_p"]),
                  transforms.RandomAffine(p["degrees"], translate=(p["translate"], p["translate"]))]
    elif aug["kind"] != "none":
        raise ConfigError(
            f"the reference loop implements augmentations none and flip_affine, not {aug['kind']!r}"
        )
    steps += [transforms.ToTensor(), transforms.Normalize((norm["mean"],), (norm["std"],))]
    return transforms.Compose(steps)


class ReferenceLoop:
    """The loop as the reports wrote it: torchvision dataset, DataLoader workers, per-image PIL transforms,
    `.item()` on the loss and the correct count every step."""

    def __init__(self, run: dict, root: Path, device, workers: int):
        import torch
        from torchvision import datasets

        from fmnist.models import build_model

        cfg = run["train"]
        self.device = device
        self.dataset = datasets.FashionMNIST(str(root), train=True, download=False,
                                             transform=reference_transform(run))
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=int(cfg["batch_size"]), shuffle=True, num_workers=workers,
        )
        self.model = build_model(run["model"]["arch"], run["model"]["args"]).to(device)
        opt = cfg["optimizer"]
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=opt["lr"])
        self.criterion = torch.nn.CrossEntropyLoss()

    def steps(self, n: int, warmup: int) -> float:
        """Run `warmup` untimed steps (workers started, caches warm), then `n` timed ones; seconds."""
        self.model.train()
        it = iter(self.loader)
        running_loss, correct, seen = 0.0, 0, 0
        t0 = 0.0
        for i in range(warmup + n):
            if i == warmup:
                t0 = time.perf_counter()
            images, labels = next(it)
            images, labels = images.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad()
            outputs = self.model(images)
            loss = self.criterion(outputs, labels)
            loss.backward()
            self.optimizer.step()
            running_loss += loss.item() * images.size(0)
            correct += (outputs.argmax(1) == labels).sum().item()
            seen += images.size(0)
        seconds = time.perf_counter() - t0
        del it  # stops the workers outside the timed part
        return seconds


class FmnistLoop:
    """fmnist's trainer (`train.StepLoop`) on the split held on the device."""

    def __init__(self, run: dict, arrays: dict, device):
        from fmnist import train

        self.train = train.Batches(arrays["train_images"], arrays["train_labels"], device)
        self.loop = train.StepLoop.build(run, 10, len(self.train), device)
        self.device = device

    def steps(self, n: int, warmup: int) -> float:
        import torch

        self.loop.epoch(self.train, 1, max_steps=warmup)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        _, _, _, reason = self.loop.epoch(self.train, 1, max_steps=n)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        if reason:
            raise RuntimeError(f"the benchmark run diverged: {reason}")
        return seconds


def throughput(model: str = "standard_cnn", augmentation: str = "none", device: str = "auto",
               data: Path | str = DEFAULT_DATA, configfile: Path | str = DEFAULT_CONFIG,
               batch_size: int = 64, images: int = 6400, warmup: int = 10, repeats: int = 3,
               threads: int = 2, workers: int = 2, channels_last: bool | None = None,
               compile_model: bool | None = None, log=print) -> dict:
    """Images/s of the reference loop and of fmnist's trainer on the same model, optimizer, batch and images."""
    import torch

    from fmnist import train
    from fmnist.data import load_prepared

    data = _check_data(data)
    torch.set_num_threads(threads)
    dev = train.select_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # the reports' recipe on both sides, whatever the config's defaults: Adam 1e-3, no schedule
    overrides = {"batch_size": batch_size, "optimizer": {"name": "adam", "lr": 1e-3}, "scheduler": {"name": "none"}}
    if channels_last is not None:
        overrides["channels_last"] = channels_last
    if compile_model is not None:
        overrides["compile"] = compile_model
    run = resolve_one(configfile, model, augmentation, train=overrides)
    arrays, _ = load_prepared(data)
    steps = max(1, images // batch_size)
    if (steps + warmup) * batch_size > len(arrays["train_labels"]):
        raise ConfigError(
            f"{steps + warmup} steps of {batch_size} need more images than the {len(arrays['train_labels'])} "
            "training images of the data file: lower --images or --warmup"
        )
    root = Path(tempfile.mkdtemp(prefix="fmnist-bench-"))
    try:
        torch.manual_seed(0)
        ref = ReferenceLoop(run, torchvision_root(arrays, root), dev, workers)
        torch.manual_seed(0)
        fast = FmnistLoop(run, arrays, dev)
        times: dict[str, list[float]] = {"reference": [], "fmnist": []}
        for rep in range(repeats):
            for name, loop in (("reference", ref), ("fmnist", fast)):
                seconds = loop.steps(steps, warmup)
                times[name].append(steps * batch_size / seconds)
                log(f"[bench] repeat {rep + 1}/{repeats} {name:9s} {times[name][-1]:8.0f} images/s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ref_ips, fast_ips = statistics.median(times["reference"]), statistics.median(times["fmnist"])
    cfg = run["train"]
    return {
        "model": model, "augmentation": augmentation, "device": str(dev),
        "device_name": train.device_name(dev), "threads": threads, "workers": workers,
        "batch_size": batch_size, "images": steps * batch_size, "repeats": repeats,
        "channels_last": cfg["channels_last"], "compile": cfg["compile"],
        "amp_bf16": fast.loop.use_bf16,
        "reference_images_per_s": round(ref_ips, 1), "fmnist_images_per_s": round(fast_ips, 1),
        "ratio": round(fast_ips / ref_ips, 2),
        "samples": {k: [round(v, 1) for v in vs] for k, vs in times.items()},
        "load_average": list(os.getloadavg()),
    }


# --------------------------------------------------------------------------------------------
# speedrun: a fixed schedule on all 60,000 training images, test accuracy once at the end
# --------------------------------------------------------------------------------------------

def speedrun(data: Path | str = DEFAULT_DATA, configfile: Path | str = SPEEDRUN_CONFIG,
             seeds: list[int] | None = None, epochs: int | None = None, device: str = "auto",
             threads: int = 2, log=print) -> dict:
    """Train the `speedrun` study's recipe once per seed on train + val; wall time and test accuracy."""
    import torch

    from fmnist import config, experiments, train
    from fmnist.data import load_prepared

    data = _check_data(data)
    torch.set_num_threads(threads)
    dev = train.select_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = config.load(configfile)
    if "speedrun" not in cfg["studies"]:
        raise ConfigError(f"{configfile} has no `speedrun` study; see config/speedrun.yaml")
    study = cfg["studies"]["speedrun"]
    if seeds is not None:
        study["seeds"] = list(seeds)
    if epochs is not None:
        cfg["defaults"]["epochs"] = int(epochs)
    runs, _ = experiments.expand(cfg)
    arrays, meta = load_prepared(data)
    # The fixed schedule needs no validation split: it trains on all of train + val.
    images = np.concatenate([arrays["train_images"], arrays["val_images"]])
    labels = np.concatenate([arrays["train_labels"], arrays["val_labels"]])
    results = []
    for run in runs.values():
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.manual_seed(run["seed"])
        tr = train.Batches(images, labels, dev)
        test = train.Batches(arrays["test_images"], arrays["test_labels"], dev)
        loop = train.StepLoop.build(run, len(meta["classes"]), len(tr), dev)
        for epoch in range(1, run["train"]["epochs"] + 1):
            loss_sum, _, seen, reason = loop.epoch(tr, epoch)
            if reason:
                raise RuntimeError(f"[{run['id']}] diverged: {reason}")
            log(f"[speedrun] {run['id']} epoch {epoch}/{run['train']['epochs']} "
                f"train_loss {float(loss_sum) / seen:.4f} {time.perf_counter() - t0:.1f}s")
        final = loop.ema.module if loop.ema is not None else loop.model
        test_loss, test_acc, _ = train.evaluate(final, test, loop.normalize,
                                                run["train"]["eval_batch_size"], loop.autocast)
        seconds = time.perf_counter() - t0
        log(f"[speedrun] {run['id']} test accuracy {test_acc:.4f} in {seconds:.1f}s")
        results.append({"seed": run["seed"], "seconds": round(seconds, 2),
                        "test_accuracy": test_acc, "test_loss": test_loss})
    return {
        "model": next(iter(runs.values()))["model"]["name"], "device": str(dev),
        "device_name": train.device_name(dev), "threads": threads,
        "epochs": next(iter(runs.values()))["train"]["epochs"], "n_train": int(len(labels)),
        "n_test": int(len(arrays["test_labels"])), "runs": results,
        "mean_seconds": round(statistics.mean(r["seconds"] for r in results), 2),
        "mean_test_accuracy": round(statistics.mean(r["test_accuracy"] for r in results), 4),
        "load_average": list(os.getloadavg()),
    }


# --------------------------------------------------------------------------------------------
# dag: Snakemake's planning time and the start-up cost of one training job
# --------------------------------------------------------------------------------------------

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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
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
    startup = startup_cost(first, _check_data(data), threads=threads, repeats=repeats)
    return {
        "snakemake_dry_run_seconds": round(statistics.median(seconds), 3),
        "snakemake_samples": [round(s, 3) for s in seconds],
        "configfile": str(configfile), "planned_jobs": jobs,
        "training_runs": len(experiments.expand(config.load(Path(workdir) / configfile))[0]),
        "startup_run": first["id"], "startup_seconds": startup,
        "load_average": list(os.getloadavg()),
    }


# --------------------------------------------------------------------------------------------
# deform: the fast CPU deformable convolution against torchvision's kernel
# --------------------------------------------------------------------------------------------

DEFORM_MODELS = ("deformable_cnn", "deformable_cnn_a")


def _deform_layer_ips(block, x, seconds: float) -> float:
    """Training images/s of one DeformBlock alone: forward, backward to its input and parameters."""
    import torch

    x = x.detach().requires_grad_(x.shape[1] > 1)  # the first layer's image needs no gradient
    grad = None
    steps, t0 = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - t0 < seconds:
        out = block(x)
        if grad is None:
            grad = torch.randn_like(out)
        out.backward(grad)
        steps += 1
    return steps * len(x) / (time.perf_counter() - t0)


def deform(models: tuple[str, ...] | list[str] = DEFORM_MODELS, batch_size: int = 64, seconds: float = 2.0,
           repeats: int = 3, threads: int = 1, log=print) -> dict:
    """Training images/s of each deformable layer and of each whole model on the CPU, with torchvision's
    kernel (FMNIST_FAST_DEFORM=0) and with fmnist's fast path, alternating per repeat; medians and ratios."""
    import torch

    from fmnist import models as registry
    from fmnist.models import deform_ops, measure
    from fmnist.models.deformable import DeformBlock
    from fmnist.runtime import device_name

    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    rows = []
    previous = os.environ.get(deform_ops.FAST_CPU_ENV)
    try:
        for name in models:
            torch.manual_seed(0)
            model = registry.build_model(name)
            blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, DeformBlock)]
            inputs: dict[str, torch.Tensor] = {}
            hooks = [m.register_forward_pre_hook(lambda _m, inp, n=n, seen=inputs: seen.update({n: inp[0]}))
                     for n, m in blocks]  # update() returns None: the hook records and changes nothing
            with torch.no_grad():
                model(torch.randn(batch_size, 1, 28, 28))
            for h in hooks:
                h.remove()
            samples: dict[str, dict[str, list[float]]] = {}
            for rep in range(repeats):
                for mode, env in (("torchvision", "0"), ("fast", "1")):
                    os.environ[deform_ops.FAST_CPU_ENV] = env
                    for n, m in blocks:
                        ips = _deform_layer_ips(m, inputs[n], seconds)
                        samples.setdefault(n, {}).setdefault(mode, []).append(ips)
                    ips, _ = measure.train_images_per_second(model, cpu, batch_size, seconds)
                    samples.setdefault("whole model", {}).setdefault(mode, []).append(ips)
                    log(f"[bench] {name} repeat {rep + 1}/{repeats} {mode:11s} whole model {ips:8.1f} images/s")
            for part, by_mode in samples.items():
                tv, fast = statistics.median(by_mode["torchvision"]), statistics.median(by_mode["fast"])
                shape = "" if part == "whole model" else "x".join(map(str, inputs[part].shape[1:]))
                rows.append({"model": name, "part": part, "input": shape,
                             "torchvision_images_per_s": round(tv, 1), "fast_images_per_s": round(fast, 1),
                             "ratio": round(fast / tv, 2)})
    finally:
        if previous is None:
            os.environ.pop(deform_ops.FAST_CPU_ENV, None)
        else:
            os.environ[deform_ops.FAST_CPU_ENV] = previous
    return {"rows": rows, "batch_size": batch_size, "threads": threads, "seconds": seconds,
            "repeats": repeats, "device_name": device_name(cpu), "load_average": list(os.getloadavg())}


# --------------------------------------------------------------------------------------------
# steps: one training step of the trainer in several numerics / launch modes
# --------------------------------------------------------------------------------------------

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


def _ms_per_step(step, warmup: int, n_steps: int, dev) -> float:
    """Milliseconds per call of `step(i)` over steps warmup .. warmup + n_steps - 1, after the warm-up
    steps 0 .. warmup - 1; CUDA synchronised before and after the timed steps."""
    import torch

    for i in range(warmup):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(warmup, warmup + n_steps):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n_steps * 1000


def steps(model: str = "standard_cnn", device: str = "auto", variants: list[str] | None = None,
          data: Path | str = DEFAULT_DATA, configfile: Path | str = DEFAULT_CONFIG, batch_size: int = 64,
          n_steps: int = 100, warmup: int = 10, repeats: int = 3, threads: int = 2, log=print) -> dict:
    """Milliseconds per training step of fmnist's trainer (`StepLoop.step`, the config's recipe for
    `model`, no augmentation) in each variant: fp32/bf16 on a CPU; eager, compiled, compiled with
    reduce-overhead and CUDA-graphed (all bf16) on CUDA. Variants alternate per repeat; medians."""
    import torch

    from fmnist import train
    from fmnist.data import load_prepared

    data = _check_data(data)
    torch.set_num_threads(threads)
    dev = train.select_device(device)
    variants = list(variants or (CUDA_STEP_VARIANTS if dev.type == "cuda" else CPU_STEP_VARIANTS))
    unknown = [v for v in variants if v not in STEP_VARIANTS]
    if unknown:
        raise ConfigError(f"unknown step variant(s) {', '.join(unknown)}: use {', '.join(STEP_VARIANTS)}")
    if dev.type != "cuda" and any(v not in CPU_STEP_VARIANTS for v in variants):
        raise ConfigError(f"variants {', '.join(v for v in variants if v not in CPU_STEP_VARIANTS)} need CUDA")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # no schedule: a per-batch one (the default study's one-cycle) would run out of steps over the repeats
    run = resolve_one(configfile, model, "none", train={"batch_size": batch_size, "scheduler": {"name": "none"}})
    arrays, _ = load_prepared(data)
    split = train.Batches(arrays["train_images"], arrays["train_labels"], dev)
    if (n_steps + warmup) * batch_size > len(split):
        raise ConfigError(f"{n_steps + warmup} steps of {batch_size} need more images than the data file has")
    loops = {v: _step_loop(run, v, split, dev) for v in variants}

    def timed(loop) -> float:
        return _ms_per_step(lambda i: loop.step(split.images[i * batch_size:(i + 1) * batch_size],
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


# --------------------------------------------------------------------------------------------
# fused seeds: k seeds of one model as one vmapped model (torch.func) against k models stepped in turn
# --------------------------------------------------------------------------------------------


def fused_seeds(model: str = "standard_cnn", seeds: int = 4, device: str = "auto",
                data: Path | str = DEFAULT_DATA, configfile: Path | str = DEFAULT_CONFIG, batch_size: int = 64,
                n_steps: int = 30, warmup: int = 5, repeats: int = 3, threads: int = 2, log=print) -> dict:
    """Milliseconds per step of `seeds` runs of `model` (their own initialisations, their own batches):
    one vmapped model over their stacked parameters (`torch.func.stack_module_state` + `vmap`, one
    Adam over the stacks), against the same models stepped one after another in one process. The
    ratio says whether fusing seeds (issue 24; HFTA's idea) beats separate runs before anyone builds it
    into the trainer. bf16 autocast on CUDA as the trainer's, float32 on a CPU. BatchNorm runs on batch
    statistics only in both (`replace_all_batch_norm_modules_`: vmap cannot update running stats in
    place); dropout draws differently per seed."""
    import torch
    import torch.nn.functional as F
    from torch.func import (
        functional_call,
        grad_and_value,
        replace_all_batch_norm_modules_,
        stack_module_state,
        vmap,
    )

    from fmnist import train
    from fmnist.data import load_prepared
    from fmnist.models import build_model

    if seeds < 2:
        raise ConfigError(f"fused seeds needs at least 2 seeds, got {seeds}")
    data = _check_data(data)
    torch.set_num_threads(threads)
    dev = train.select_device(device)
    run = resolve_one(configfile, model, "none", train={"batch_size": batch_size})
    arrays, _ = load_prepared(data)
    split = train.Batches(arrays["train_images"], arrays["train_labels"], dev)
    need = (n_steps + warmup) * batch_size * seeds
    if need > len(split):
        raise ConfigError(f"{seeds} seeds x {n_steps + warmup} steps of {batch_size} need {need} images; "
                          f"the data file has {len(split)}")
    use_bf16 = dev.type == "cuda"

    def autocast():
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16)

    def models():
        out = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            m = build_model(run["model"]["arch"], run["model"]["args"], num_classes=10).to(dev)
            replace_all_batch_norm_modules_(m)
            out.append(m.train())
        return out

    def batch(step: int, seed: int):
        i = (step * seeds + seed) * batch_size
        return train.to_unit(split.images[i:i + batch_size]), split.labels[i:i + batch_size]

    lr = float(run["train"]["optimizer"]["lr"])
    separate = models()
    separate_opt = [torch.optim.Adam(m.parameters(), lr=lr) for m in separate]

    def step_separate(step: int) -> None:
        for seed, (m, opt) in enumerate(zip(separate, separate_opt, strict=True)):
            x, y = batch(step, seed)
            with autocast():
                loss = F.cross_entropy(m(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    fused_models = models()
    params, buffers = stack_module_state(fused_models)
    base = fused_models[0].to("meta")
    params = {k: v.detach().requires_grad_(False) for k, v in params.items()}
    fused_opt = torch.optim.Adam(list(params.values()), lr=lr)

    def loss_of(p, b, x, y):
        with autocast():
            return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    grad_fn = vmap(grad_and_value(loss_of), in_dims=(0, 0, 0, 0), randomness="different")

    def step_fused(step: int) -> None:
        xs, ys = zip(*(batch(step, seed) for seed in range(seeds)), strict=True)
        grads, _ = grad_fn(params, buffers, torch.stack(xs), torch.stack(ys))
        for k, v in params.items():
            v.grad = grads[k]
        fused_opt.step()

    def grad_difference() -> float:
        """Largest relative difference between the fused gradients and each model's own, before any
        step, in eval mode (no dropout draws): both compute the same thing."""
        for m in separate:
            m.eval()
        base.eval()
        xs, ys = zip(*(batch(0, seed) for seed in range(seeds)), strict=True)
        fused_grads, _ = grad_fn(params, buffers, torch.stack(xs), torch.stack(ys))
        worst = 0.0
        for seed, m in enumerate(separate):
            m.zero_grad(set_to_none=True)
            with autocast():
                F.cross_entropy(m(xs[seed]), ys[seed]).backward()
            for name, p in m.named_parameters():
                ref, got = p.grad.float(), fused_grads[name][seed].float()
                worst = max(worst, float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)))
            m.zero_grad(set_to_none=True)
            m.train()
        base.train()
        return worst

    difference = grad_difference()
    samples: dict[str, list[float]] = {"separate": [], "fused": []}
    for rep in range(repeats):
        for name, fn in (("separate", step_separate), ("fused", step_fused)):
            samples[name].append(_ms_per_step(fn, warmup, n_steps, dev))
            log(f"[bench] repeat {rep + 1}/{repeats} {name:9s} {samples[name][-1]:8.3f} ms per step of {seeds} seeds")
    ms = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "model": model, "seeds": seeds, "device": str(dev), "device_name": train.device_name(dev),
        "threads": threads, "batch_size": batch_size, "steps": n_steps, "repeats": repeats,
        "amp": "bf16" if use_bf16 else "off",
        "ms_per_step_of_all_seeds": {k: round(v, 3) for k, v in ms.items()},
        "images_per_s": {k: round(seeds * batch_size / v * 1000, 1) for k, v in ms.items()},
        "fused_speedup": round(ms["separate"] / ms["fused"], 2),
        "max_relative_grad_difference": float(f"{difference:.3g}"),
        "samples": {k: [round(x, 3) for x in v] for k, v in samples.items()},
        "load_average": list(os.getloadavg()),
    }


# --------------------------------------------------------------------------------------------
# gpu: the one prepared call for a GPU machine
# --------------------------------------------------------------------------------------------

GPU_BENCH_FILE = "bench_gpu.json"
GPU_TABLE_FILE = "bench_gpu.txt"


def parse_dmon(text: str) -> dict[str, list[float]]:
    """SM utilisation samples (%) per GPU from `nvidia-smi dmon -s u` output: its `# gpu sm mem ...`
    header names the columns; '-' (not supported) and partial lines are skipped."""
    columns: list[str] = []
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "#":
            if len(parts) > 1 and parts[1].lower() in ("gpu", "idx") and "sm" in [p.lower() for p in parts]:
                columns = [p.lower() for p in parts[1:]]
            continue
        if not columns or len(parts) != len(columns):
            continue
        row = dict(zip(columns, parts, strict=True))
        try:
            out.setdefault(row["gpu"], []).append(float(row["sm"]))
        except ValueError:
            continue
    return out


class Dmon:
    """`nvidia-smi dmon -s u -d 1` in the background while a block runs; `.sm` holds its samples."""

    def __init__(self, path: Path):
        self.path, self.proc, self.sm = Path(path), None, {}

    def __enter__(self):
        smi = shutil.which("nvidia-smi")
        if smi:
            self.fh = open(self.path, "w")  # noqa: SIM115 - closed in __exit__
            self.proc = subprocess.Popen([smi, "dmon", "-s", "u", "-d", "1"], stdout=self.fh,
                                         stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.fh.close()
            self.sm = parse_dmon(self.path.read_text())
        return False


def sm_summary(sm: dict[str, list[float]]) -> dict:
    samples = [x for xs in sm.values() for x in xs]
    return {"sm_mean_percent": round(statistics.mean(samples), 1) if samples else None,
            "sm_samples": len(samples), "gpus_seen": sorted(sm)}


def _workflow(workdir: Path, configfile: Path | str, cores: int, targets: list[str], config: list[str],
              resources: list[str], timeout: float) -> tuple[float, str]:
    """Run this checkout's workflow on `configfile` in `workdir`; (seconds, the end of its log)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", *targets, "-s", str(REPO_ROOT / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(Path(configfile).resolve()), "--cores", str(cores),
           "--resources", *resources, "--config", *config]
    env = {**os.environ, "SNAKEMAKE_OUTPUT_CACHE": str(workdir.resolve() / "cache"),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(1.0, timeout), check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"`{' '.join(cmd)}` ran past the bench's budget ({timeout:.0f}s left)") from exc
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return seconds, (proc.stdout + proc.stderr)[-2000:]


def require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "bench gpu needs a CUDA GPU and torch.cuda.is_available() is False here: run it on the GPU "
            "machine (docs/performance.md, GPUs); on a CPU use `bench steps` and `bench throughput`"
        )


def gpu(out: Path | str = "bench-gpu", data: Path | str = DEFAULT_DATA, raw: Path | str | None = None,
        cores: int | None = None, sequential_runs: int = 2, budget: float = 330.0,
        configfile: Path | str = DEFAULT_CONFIG, plan_config: Path | str = FULL_CONFIG, device: str = "cuda",
        n_steps: int = 100, images: int = 12800, plan_seconds: float = 0.5, log=print) -> dict:
    """Everything the GPU goals need, in one command (at most ~6 minutes on one H200): the default study
    through `snakemake --cores N --resources gpu=1` (wall time, SM utilisation from nvidia-smi dmon),
    `sequential_runs` of its runs one job at a time (gpu_slots=1) for the packing ratio, step times
    eager/compiled/graphed, the trainer against the reports' loop, and the full study's plan (GPU-hours
    and packed wall-hours on this machine), and seeds fused into one vmapped model against separate
    steps (`fused_seeds`). Each part's result is written to `out` as soon as it ends;
    a part that fails is recorded with its error and the others still run. `raw`: a directory with the
    four IDX .gz files (default: the config's data.sources). `device: cpu` rehearses the same calls
    on a CPU (tests)."""
    if device == "cuda":
        require_cuda()
    from fmnist import config as fmnist_config
    from fmnist import experiments

    data = _check_data(data)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cores = int(cores or os.cpu_count() or 1)
    t_start = time.perf_counter()
    result: dict = {"device": device, "cores": cores, "configfile": str(configfile), "parts": {}}
    settings = [f"device={device}"] + ([f"data={json.dumps({'sources': [str(Path(raw).resolve())]})}"] if raw else [])

    def left() -> float:
        return budget - (time.perf_counter() - t_start)

    def part(name: str, fn) -> None:
        t0 = time.perf_counter()
        log(f"[bench gpu] {name} ({left():.0f}s of the budget left) ...")
        try:
            result["parts"][name] = {**fn(), "seconds": round(time.perf_counter() - t0, 1)}
        except Exception as exc:  # one failing part must not lose the others' figures
            result["parts"][name] = {"error": f"{type(exc).__name__}: {str(exc)[-1500:]}"}
        write_gpu_result(result, out)
        log(f"[bench gpu] {name}: {json.dumps(result['parts'][name])[:400]}")

    cfg = fmnist_config.load(configfile)
    ids = list(experiments.expand(cfg)[0])
    prepared = str(Path(cfg["data"]["dir"]) / "prepared" / "fashion_mnist.npz")

    def study(workdir: Path, targets: list[str], extra: list[str]) -> tuple[float, str, dict]:
        _workflow(workdir, configfile, cores, [prepared], settings, ["gpu=1"], left())  # data: not timed
        with Dmon(out / f"dmon_{workdir.name}.txt") as d:
            seconds, tail = _workflow(workdir, configfile, cores, targets, settings + extra, ["gpu=1"], left())
        return seconds, tail, sm_summary(d.sm)

    def packed():
        seconds, tail, sm = study(out / "packed", [], [])
        return {"command": f"snakemake --cores {cores} --resources gpu=1", "runs": len(ids),
                "wall_seconds": round(seconds, 1), **sm, "log_tail": tail[-600:]}

    def sequential():
        sample = ids[:sequential_runs]
        seconds, _, sm = study(out / "sequential", [f"results/runs/{r}/metrics.json" for r in sample],
                               ["gpu_slots=1"])
        per_run = seconds / len(sample)
        return {"runs": sample, "wall_seconds": round(seconds, 1), "seconds_per_run": round(per_run, 1),
                "estimated_study_seconds_one_at_a_time": round(per_run * len(ids), 1), **sm}

    part("packed_default_study", packed)
    part("one_job_at_a_time_sample", sequential)
    p, s = result["parts"]["packed_default_study"], result["parts"]["one_job_at_a_time_sample"]
    if "wall_seconds" in p and "estimated_study_seconds_one_at_a_time" in s:
        result["packing_ratio"] = round(s["estimated_study_seconds_one_at_a_time"] / p["wall_seconds"], 2)
    part("step_times", lambda: steps(device=device, data=data, n_steps=n_steps, repeats=3, log=lambda _m: None))
    part("fused_seeds", lambda: fused_seeds(device=device, data=data, seeds=4, n_steps=max(2, n_steps // 5),
                                            warmup=2, repeats=3, log=lambda _m: None))
    part("throughput_vs_reports_loop", lambda: throughput(device=device, data=data, images=images, repeats=3,
                                                          threads=2, workers=2, log=lambda _m: None))

    def full_plan():
        from fmnist import plan

        pcfg = fmnist_config.load(plan_config, {"device": device})
        r = plan.plan(pcfg, measure_missing=True, seconds=plan_seconds, batch_cap=64, log=lambda _m: None)
        wall = plan.wall_clock(r, pcfg, gpus=1, cores=cores)
        return {"configfile": str(plan_config), "unit": r["unit"], "hours": round(r["total_hours"], 4),
                "wall_hours": round(wall["total_hours"], 4), "machine": wall["machine"], "missing": r["missing"],
                "studies": {k: {"hours": round(v["hours"], 4), "wall_hours": round(wall["studies"][k], 4)}
                            for k, v in r["studies"].items()}}

    part("full_study_plan", full_plan)
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_gpu_result(result, out)
    return result


def gpu_table(result: dict) -> str:
    """A short human table of a `gpu` result (whatever parts it has)."""
    parts = result.get("parts", {})
    lines = ["fmnist bench gpu"]

    def row(label: str, value) -> None:
        lines.append(f"  {label:52s} {value}")

    for name, p in parts.items():
        lines.append(f"{name}:" + (f" ERROR {p['error'][:200]}" if "error" in p else ""))
        if "error" in p:
            continue
        if name == "packed_default_study":
            row(f"{p['command']}, {p['runs']} runs: wall seconds", p["wall_seconds"])
            row("SM utilisation, mean %", p["sm_mean_percent"])
        elif name == "one_job_at_a_time_sample":
            row(f"{len(p['runs'])} runs one at a time: seconds per run", p["seconds_per_run"])
            row("the whole study one at a time (estimated), seconds", p["estimated_study_seconds_one_at_a_time"])
            row("SM utilisation, mean %", p["sm_mean_percent"])
        elif name == "step_times":
            for v, ms in p["ms_per_step"].items():
                row(f"step ms, {p['model']} batch {p['batch_size']}, {v}", ms)
        elif name == "fused_seeds":
            for v, ms in p["ms_per_step_of_all_seeds"].items():
                row(f"step ms of {p['seeds']} seeds of {p['model']}, {v}", ms)
            row("fused speedup (separate / fused)", f"{p['fused_speedup']}x")
        elif name == "throughput_vs_reports_loop":
            row("reports' loop, images/s", p["reference_images_per_s"])
            row("fmnist trainer, images/s", p["fmnist_images_per_s"])
            row("ratio", f"{p['ratio']}x")
        elif name == "full_study_plan":
            row(f"full study: {p['unit']} (one job at a time)", p["hours"])
            row(f"full study: wall hours ({p['machine']})", p["wall_hours"])
    if "packing_ratio" in result:
        lines.append(f"packing ratio (one at a time / packed): {result['packing_ratio']}x")
    if "total_seconds" in result:
        lines.append(f"total: {result['total_seconds']} s")
    return "\n".join(lines) + "\n"


def write_gpu_result(result: dict, out: Path | str) -> None:
    """The JSON and the table of a `gpu` result into `out` (rewritten after every part)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / GPU_BENCH_FILE).write_text(json.dumps(result, indent=2))
    (out / GPU_TABLE_FILE).write_text(gpu_table(result))


# ---------------------------------------------------------------------------------------------
# amp: a whole study in float32 and in bf16, paired run by run
# ---------------------------------------------------------------------------------------------

AMP_BENCH_FILE = "bench_amp.json"
AMP_MODES = ("off", "bf16")


def amp_config(configfile: Path | str, amp: str, seeds: int | None = None) -> dict:
    """`configfile` as written, with every run's `amp` pinned to `amp` and, with `seeds`, every
    study's seeds replaced by 0..seeds-1 (both modes get the same runs, so they pair up)."""
    import yaml

    from fmnist.config import deep_merge

    raw = yaml.safe_load(Path(configfile).read_text()) or {}
    cfg = deep_merge(raw, {"defaults": {"amp": amp}})
    if seeds is not None:
        for study in cfg.get("studies", {}).values():
            study["seeds"] = list(range(seeds))
    return cfg


def amp_pairs(results: dict[str, dict[str, dict]]) -> dict:
    """Pair each run's bf16 result with its float32 one ({mode: {run id: metrics}}): the training-time
    ratio (float32 seconds / bf16 seconds) and the test-accuracy difference (bf16 - float32, points),
    with a paired t interval over the runs both modes finished."""
    from scipy import stats

    off, bf16 = results.get("off", {}), results.get("bf16", {})
    runs = sorted(set(off) & set(bf16))
    rows = [{"run": r, "accuracy_off": 100 * off[r]["test_accuracy"], "accuracy_bf16": 100 * bf16[r]["test_accuracy"],
             "seconds_off": off[r]["train_seconds"], "seconds_bf16": bf16[r]["train_seconds"]} for r in runs]
    for row in rows:
        row["accuracy_diff"] = round(row["accuracy_bf16"] - row["accuracy_off"], 4)
        row["train_speedup"] = round(row["seconds_off"] / row["seconds_bf16"], 3)
    out: dict = {"pairs": len(rows), "unpaired": sorted(set(off) ^ set(bf16)), "runs": rows}
    if not rows:
        return out
    diffs, ratios = [r["accuracy_diff"] for r in rows], [r["train_speedup"] for r in rows]
    out["train_speedup_median"] = round(statistics.median(ratios), 2)
    out["train_speedup_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
    out["accuracy_diff_mean"] = round(statistics.fmean(diffs), 3)
    out["bf16_lower"] = sum(d < 0 for d in diffs)
    out["bf16_higher"] = sum(d > 0 for d in diffs)
    if len(rows) >= 2 and statistics.stdev(diffs) > 0:
        t = stats.ttest_1samp(diffs, 0.0)
        ci = t.confidence_interval(0.95)
        out["accuracy_diff_ci95"] = [round(float(ci.low), 3), round(float(ci.high), 3)]
        out["accuracy_diff_p"] = round(float(t.pvalue), 4)
    return out


def amp(out: Path | str = "bench-amp", configfile: Path | str = DEFAULT_CONFIG, seeds: int | None = None,
        cores: int | None = None, device: str = "cpu", modes: tuple[str, ...] = AMP_MODES,
        budget: float = 4 * 3600.0, log=print) -> dict:
    """The study of `configfile` run twice through the workflow, in `out`/off (float32) and `out`/bf16,
    one mode after the other (`modes` sets the order): each one's wall time (data preparation not
    timed) and, run by run, the training-time ratio and the test-accuracy difference (`amp_pairs`).
    This is what `amp: auto` trades on a CPU with native bf16; the figures say which CPU. A run whose
    setting or preset pins its own `amp` computes the same way in both folders: it is counted only in
    the mode it ran in, and listed as unpaired rather than compared with itself."""
    import yaml

    from fmnist import amp as fmnist_amp
    from fmnist import gpus, plan

    if sorted(modes) != sorted(AMP_MODES):
        raise ConfigError(f"bench amp: modes {list(modes)}: give each of {', '.join(AMP_MODES)} once")
    if seeds is not None and seeds < 1:
        raise ConfigError("bench amp: --seeds must be at least 1")
    out = Path(out).resolve()
    done = [str(out / mode / "results") for mode in modes if (out / mode / "results").exists()]
    if done:
        raise ConfigError(f"bench amp: {', '.join(done)} holds an earlier bench's runs, which would not be "
                          f"trained (and timed) again: give another --out, or remove {out} first")
    out.mkdir(parents=True, exist_ok=True)
    cores = int(cores or os.cpu_count() or 1)
    t_start = time.perf_counter()
    result: dict = {"configfile": str(configfile), "seeds": seeds, "cores": cores, "device": device,
                    "machine": plan.device_label(device), "native_bf16_cpu": fmnist_amp.cpu_has_native_bf16(),
                    "auto_resolves_to": fmnist_amp.resolve_amp("auto", gpus.target_kind(device)),
                    "order": list(modes), "wall_seconds": {}}
    results: dict[str, dict[str, dict]] = {}

    def left() -> float:
        return budget - (time.perf_counter() - t_start)

    for mode in modes:
        workdir = out / mode
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = amp_config(configfile, mode, seeds)
        cfg_path = workdir / "bench_amp_config.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        prepared = str(Path(cfg.get("data", {}).get("dir", "data")) / "prepared" / "fashion_mnist.npz")
        settings = [f"device={device}"]
        log(f"[bench amp] {mode}: preparing the data (not timed) ...")
        _workflow(workdir, cfg_path, cores, [prepared], settings, ["gpu=1"], left())
        log(f"[bench amp] {mode}: the study ({left():.0f}s of the budget left) ...")
        seconds, _ = _workflow(workdir, cfg_path, cores, [], settings, ["gpu=1"], left())
        result["wall_seconds"][mode] = round(seconds, 1)
        results[mode] = {}
        for f in sorted((workdir / "results" / "runs").glob("*/metrics.json")):
            m = json.loads(f.read_text())
            if m.get("status", "ok") == "ok" and m.get("amp_resolved") == mode:
                results[mode][m["run_id"]] = m
        log(f"[bench amp] {mode}: {seconds:.1f}s, {len(results[mode])} runs")
    w = result["wall_seconds"]
    result["study_speedup"] = round(w["off"] / w["bf16"], 2)
    result.update(amp_pairs(results))
    (out / AMP_BENCH_FILE).write_text(json.dumps(result, indent=2))
    return result


def amp_table(r: dict) -> str:
    """A short human table of an `amp` result."""
    lines = [f"fmnist bench amp: {r['configfile']} on {r['machine']} ({r['cores']} cores; native bf16: "
             f"{'yes' if r['native_bf16_cpu'] else 'no'}; amp auto here: {r['auto_resolves_to']})",
             f"  study wall seconds: float32 {r['wall_seconds']['off']}, bf16 {r['wall_seconds']['bf16']}: "
             f"bf16 {r['study_speedup']}x (order: {', '.join(r['order'])})"]
    if r["pairs"]:
        lines.append(f"  training time per run, float32 / bf16: median {r['train_speedup_median']}x "
                     f"(range {r['train_speedup_range'][0]}-{r['train_speedup_range'][1]}), {r['pairs']} runs")
        ci = (f", 95% CI {r['accuracy_diff_ci95'][0]:+.3f} to {r['accuracy_diff_ci95'][1]:+.3f}, "
              f"paired t p = {r['accuracy_diff_p']}") if "accuracy_diff_ci95" in r else ""
        lines.append(f"  test accuracy, bf16 - float32: mean {r['accuracy_diff_mean']:+.3f} points{ci}; "
                     f"bf16 lower in {r['bf16_lower']}, higher in {r['bf16_higher']} of {r['pairs']}")
    if r["unpaired"]:
        lines.append(f"  runs finished in one mode only (not compared): {', '.join(r['unpaired'])}")
    return "\n".join(lines) + "\n"

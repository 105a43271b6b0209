"""The throughput cache: figures measured once per (device, model, batch size, fast paths), kept in a
JSON file outside the repository ($FMNIST_CACHE_DIR or ~/.cache/fmnist/throughput.json) so that
Snakemake can read them while it parses (no torch import, no measuring there); their keys, and the
measurement that makes one."""

from __future__ import annotations

import contextlib
import json
import os
import time
from importlib import metadata
from pathlib import Path

from fmnist import amp as fmnist_amp
from fmnist.plan.labels import label_matches


def cache_path() -> Path:
    root = os.environ.get("FMNIST_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fmnist"
    )
    return Path(root) / "throughput.json"


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
    """The cache key of `run`'s training speed on `label`: keyed by what sets it, the model and its
    arguments, the batch, the numerics the run uses on that kind of device (`amp: auto` resolved), its
    augmentation, channels_last, EMA, compile and CUDA graph; not by the seed, the learning rate or the
    epochs."""
    m, t = run["model"], run["train"]
    args = {k: v for k, v in m["args"].items() if k not in ("weights_path", "pretrained", "input_mean", "input_std")}
    kind = "cuda" if label.startswith("cuda") else "cpu"
    aug = run["augmentation"]
    step = {"amp": fmnist_amp.resolve_amp(t["amp"], kind), "augmentation": [aug["kind"], aug["params"]],
            "channels_last": t["channels_last"], "ema": t["ema"]["enabled"], "compile": t["compile"],
            "cuda_graph": t.get("cuda_graph", False)}
    return "|".join([label, f"torch {_torch_version()}", m["arch"],
                     json.dumps(args, sort_keys=True, separators=(",", ":")),
                     f"batch {t['batch_size']}", fast_mode(run, fast),
                     json.dumps(step, sort_keys=True, separators=(",", ":"))])


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


def measure(run: dict, device: str, threads: int, fast: bool, seconds: float = 2.0,
            batch_cap: int | None = None) -> dict:
    """Measure a run's model: training images/s at its batch size, activation bytes per image, parameters.

    `batch_cap` measures at most that many images per step (the figure then stands for the run's
    batch size): for large models on a slow device, where a step at the full batch takes minutes."""
    import torch

    from fmnist import models
    from fmnist.models import deform_ops
    from fmnist.models import measure as model_measure
    from fmnist.runtime import configure_backends, device_name, select_device

    torch.set_num_threads(threads)
    dev = select_device(device)
    configure_backends(dev)
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
    del model
    ctx = deform_ops.torchvision_kernel() if not fast else contextlib.nullcontext()
    with ctx:
        ips, steps = step_images_per_second({**run, "model": {**m, "args": args}}, dev, batch, seconds)
    row = {"train_images_per_s": round(ips, 2), "steps": steps, "params": params,
           "activation_bytes_per_image": saved[0] // batch, "device_name": device_name(dev),
           "measured_batch": batch,
           "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return row


def step_images_per_second(run: dict, dev, batch: int, seconds: float, warmup_steps: int = 2) -> tuple[float, int]:
    """(images/s, steps timed) of the trainer's own steps for `run` (fmnist.train.StepLoop: its amp,
    augmentation, channels_last, optimizer, loss, schedule and EMA) on random uint8 batches of `batch`
    images held on `dev`, after `warmup_steps`, for at least `seconds` and at least two steps."""
    import torch

    from fmnist.train import StepLoop

    probe = json.loads(json.dumps(run))
    probe["train"]["batch_size"] = batch
    probe["train"]["epochs"] = 10_000  # a per-batch schedule must not run out of steps while timed
    torch.manual_seed(0)
    loop = StepLoop.build(probe, 10, n_train=batch * 8, device=dev)
    images = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8, device=dev)
    labels = torch.randint(0, 10, (batch,), device=dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(warmup_steps):
        loop.step(images, labels)
    sync()
    steps, t0 = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - t0 < seconds:
        loss, _, _ = loop.step(images, labels)
        if dev.type == "cpu":
            float(loss)  # the trainer reads every CPU step's loss (its divergence check)
        steps += 1
    sync()
    return steps * batch / (time.perf_counter() - t0), steps


def feature_figure_key(run: dict, label: str) -> str:
    """The cache key of the speed of `run`'s backbone pass on `label`: keyed by what sets it (the backbone
    and its arguments, the amp a job uses on that kind of device, channels_last), not by the seed or
    the normalisation; so `plan` (which measures unresolved runs) and the workflow (whose runs have their
    amp resolved for the jobs' device) name the same figure."""
    kind = "cuda" if label.startswith("cuda") else "cpu"
    t = run["train"]
    what = {"arch": run["model"]["arch"], "args": run["model"]["args"],
            "amp": fmnist_amp.resolve_amp(t["amp"], kind), "channels_last": t["channels_last"]}
    return f"{label}|torch {_torch_version()}|features|{json.dumps(what, sort_keys=True, separators=(',', ':'))}"


def fast_paths_enabled() -> bool:
    """The fast paths a training job will take (FMNIST_FAST_DEFORM, read without importing torch)."""
    return os.environ.get("FMNIST_FAST_DEFORM", "1") != "0"

"""throughput: the reports' loop (a) against fmnist's trainer (b), on the same model, optimizer, batch
and images; the two loops alternate (a, b, a, b, ...) so that load from other processes hits both alike."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fmnist.bench.common import (
    DEFAULT_CONFIG,
    DEFAULT_DATA,
    check_data,
    configure_device,
    resolve_one,
)
from fmnist.config import ConfigError


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
        self.bf16 = False  # bf16 autocast around forward and loss, as the trainer's `amp: bf16` (like with like)

    def steps(self, n: int, warmup: int) -> float:
        """Run `warmup` untimed steps (workers started, caches warm), then `n` timed ones; seconds."""
        import torch

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
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
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
               compile_model: bool | None = None, amp: str | None = None, log=print) -> dict:
    """Images/s of the reference loop and of fmnist's trainer on the same model, optimizer, batch and images,
    in the same numerics: the reference loop runs under bf16 autocast exactly when the trainer does
    (`amp`: off or bf16 overrides the config's; auto resolves as the trainer resolves it)."""
    import torch

    from fmnist import train
    from fmnist.data import load_prepared

    data = check_data(data)
    dev = configure_device(device, threads)
    # the reports' recipe on both sides, whatever the config's defaults: Adam 1e-3, no schedule
    overrides = {"batch_size": batch_size, "optimizer": {"name": "adam", "lr": 1e-3}, "scheduler": {"name": "none"}}
    if channels_last is not None:
        overrides["channels_last"] = channels_last
    if compile_model is not None:
        overrides["compile"] = compile_model
    if amp is not None:
        overrides["amp"] = amp
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
        ref.bf16 = fast.loop.use_bf16
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
        "amp_bf16": fast.loop.use_bf16, "reference_amp_bf16": ref.bf16,
        "reference_images_per_s": round(ref_ips, 1), "fmnist_images_per_s": round(fast_ips, 1),
        "ratio": round(fast_ips / ref_ips, 2),
        "samples": {k: [round(v, 1) for v in vs] for k, vs in times.items()},
        "load_average": list(os.getloadavg()),
    }

"""What the trainer and the feature cache both need from the machine: the device, the data held on it,
normalisation, atomic saves and the environment a result records.

Kept apart from `fmnist.train` so that `fmnist.features` (which the trainer uses for head-only runs)
imports this module and not the trainer: no import circle.
"""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path
from typing import Any

import numpy as np
import torch


def select_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {spec!r} requested but CUDA is not available here; set `device: auto` or `cpu`"
        )
    return device


def configure_backends(device: torch.device) -> None:
    """The backend flags every training and benchmark on `device` runs with: on CUDA, cuDNN picks the
    fastest kernels for the (fixed) shapes, and float32 matmuls and convolutions use TF32."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def versions() -> dict[str, str]:
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda or "",
        "cudnn": str(torch.backends.cudnn.version() or ""),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class Batches:
    """A split held on the device: uint8 images (N, 1, 28, 28) and int64 labels (N,)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).to(device)
        self.labels = torch.from_numpy(labels.astype(np.int64)).to(device)

    def __len__(self) -> int:
        return len(self.labels)


class Normalizer:
    def __init__(self, mean: float, std: float, channels_last: bool):
        self.mean, self.std, self.channels_last = mean, std, channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def to_unit(images_u8: torch.Tensor) -> torch.Tensor:
    if images_u8.dtype != torch.uint8:  # cached backbone features (fmnist.features) arrive as floats
        return images_u8
    return images_u8.float().div_(255.0)


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.part")
    torch.save(obj, tmp)
    os.replace(tmp, path)

"""Device labels: this machine's compute, or the GPU model `plan_device` names, as a key of the
throughput cache; found without importing torch (the workflow reads them while it parses)."""

from __future__ import annotations

import functools
import platform
import re
from pathlib import Path

from fmnist import amp as fmnist_amp
from fmnist import config as fmnist_config
from fmnist import gpus as fmnist_gpus

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
    return f"cpu {fmnist_amp.cpu_model() or platform.machine()}, {threads} threads"


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

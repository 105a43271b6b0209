"""The model registry: every named preset, its family module, constructor arguments and source report.

This module imports no torch, so the workflow can check model names and arguments when it
parses its config; `build_model` imports a family module only when a model is built.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Preset:
    module: str
    """Family module under fmnist.models (cnn, deformable, vgg, resnet, transfer, vit)."""
    cls: str
    """Class in that module."""
    args: dict[str, Any]
    """Constructor arguments with their defaults; the keys are also the arguments a config may set."""
    source: str
    """Report id (A-E, see docs/fidelity.md) the architecture comes from."""
    summary: str
    train: dict[str, Any] = field(default_factory=dict)
    """Training overrides the report used with this model (applied before augmentation and setting)."""


_STANDARD = {"channels": [32, 64], "hidden": 128, "dilation": 1, "dropout": 0.0}
_TRANSFER = {
    "pretrained": True, "weights_path": None, "trainable": "all", "resize": "plain",
    "image_size": 224, "input_mean": 0.2860, "input_std": 0.3530, "frozen_norms": "eval",
}
_TRANSFER_TRAIN = {"eval_batch_size": 200}  # 224x224 activations: keep evaluation memory modest
_VIT_E = {"hidden_size": 64, "num_layers": 5, "num_heads": 8, "mlp_ratio": 8, "dropout": 0.1}
_VGG8 = [32, 32, "M", 64, 64, "M", 128]
_VGG = {"layers": _VGG8, "width": 1.0, "separable": [], "fc": 4096, "dropout": 0.2}

PRESETS: dict[str, Preset] = {
    # --- plain CNNs (cnn.py) ---
    "simple_cnn": Preset(
        "cnn", "SimpleCNN", {"channels": [32, 64], "hidden": [128, 64], "dropout": 0.0},
        "A", "conv 32 3x3, pool, conv 64 3x3, FC 7744->128->64->10, ReLU",
    ),
    "standard_cnn": Preset(
        "cnn", "StandardCNN", dict(_STANDARD),
        "B", "conv 1->32 3x3, pool, conv 32->64 3x3, pool, FC 3136->128, FC 128->10",
    ),
    "deep_cnn": Preset(
        "cnn", "DeepCNN", {"channels": [32, 64, 128, 256], "hidden": 128, "dropout": 0.0},
        "B", "standard CNN + conv 64->128 and conv 128->256 at 7x7, FC 12544->128->10",
    ),
    "dilated_cnn": Preset(
        "cnn", "StandardCNN", {**_STANDARD, "dilation": 2},
        "B", "standard CNN with a dilated second conv (dilation argument, padding = dilation)",
    ),
    "dilated_cnn_low": Preset(
        "cnn", "StandardCNN", {**_STANDARD, "dilation": 2},
        "B", "standard CNN, second conv dilation 2 (padding 2)",
    ),
    "dilated_cnn_high": Preset(
        "cnn", "StandardCNN", {**_STANDARD, "dilation": 10},
        "B", "standard CNN, second conv dilation 10 (padding 10)",
    ),
    "tuned_cnn": Preset(
        "cnn", "TunedCNN", {"filters1": 64, "filters2": 1024, "kernel_size": 3, "dropout": 0.0, "pool_between": False},
        "C", "conv 64 3x3, conv 1024 3x3 (no pool between), pool, FC 200704->10 (filter counts are arguments)",
    ),
    "lenet_like": Preset(
        "cnn", "LeNetLike", {"dropout": 0.5},
        "D", "three 5x5 conv-relu-pool blocks (16, 32, 64), FC 128, FC 256, FC 10, dropout 0.5",
    ),
    "vgg_like": Preset(
        "cnn", "VGGLike", {"dropout": 0.4, "head_dropout": 0.5},
        "D", "[conv-BN-relu]x2 per stage (64, 128, 256), pool + dropout 0.4 between, 7x7 avg pool, dropout 0.5, FC 10",
    ),
    # --- residual networks from scratch (resnet.py) ---
    "resnet10": Preset(
        "resnet", "ResNet10", {"widths": [64, 128, 256]},
        "D", "7x7 stride-2 stem + max-pool, one BasicBlock per stage (64, 128, 256), global pool, FC 256->10",
    ),
    "resnet18_small": Preset(
        "resnet", "ResNet18Small", {"width": 64, "dilation": 1},
        "E", "its ResNet18: 7x7/2 stem + max-pool, [2,2,2,2] blocks with a separable first conv, 64-512 (width, dilation)",
    ),
    # --- VGG networks (vgg.py) ---
    "vgg8": Preset(
        "vgg", "VGG", dict(_VGG),
        "E", "conv-BN-ReLU 32, 32, pool, 64, 64, pool, 128; FC 6272->4096->4096->10, dropout 0.2 (its vgg.py)",
    ),
    "vgg8_dsc": Preset(
        "vgg", "VGG", {**_VGG, "separable": [2, 3, 4, 5]},
        "E", "VGG8 with depthwise-separable convs in layers 2-5 (its VGG8_DWS)",
    ),
    "vgg8_wide": Preset(
        "vgg", "VGG", {**_VGG, "width": 2.0},
        "E", "VGG8 with twice the kernels in every conv (not in its code)",
    ),
    "vgg12": Preset(
        "vgg", "VGG",
        {**_VGG, "layers": [8, 8, 16, "M", 32, 64, 128, "M", 256, 512, 1024], "separable": [2, 3, 4, 5, 6, 7, 8, 9]},
        "E", "conv 8, DSC 8, 16, pool, 32, 64, 128, pool, 256, 512, 1024; FC 50176->4096->4096->10 (its VGG12)",
    ),
    # --- deformable convolutions (deformable.py) ---
    "deformable_cnn_a": Preset(
        "deformable", "DeformableCNNA", {"channels": [32, 32, 64, 64, 64], "offset_init": "zero"},
        "A", "3 conv + 2 DeformConv2d (offsets from 3x3 convs) + max-pool + FC",
    ),
    "deformable_cnn": Preset(
        "deformable", "DeformableCNN",
        {"channels": [32, 64], "hidden": 128, "batch_norm": False, "dropout": 0.0, "offset_init": "default"},
        "B", "standard CNN with both convs DeformConv2d, each fed 18 offset channels by a 3x3 conv (PyTorch init)",
    ),
    "deformable_cnn_bn": Preset(
        "deformable", "DeformableCNN",
        {"channels": [32, 64], "hidden": 128, "batch_norm": True, "dropout": 0.3, "offset_init": "default"},
        "B", "deformable CNN + BatchNorm after each deformable conv, dropout 0.3 on the FCs",
    ),
    # --- ImageNet transfer learning (transfer.py) ---
    "resnet18": Preset(
        "transfer", "ResNet18Transfer", dict(_TRANSFER),
        "D", "torchvision ResNet18, ImageNet weights, new FC 512->10, 224x224 input adapter",
        dict(_TRANSFER_TRAIN),
    ),
    "mobilenet_v3_small": Preset(
        "transfer", "MobileNetV3SmallTransfer", dict(_TRANSFER),
        "A", "torchvision MobileNetV3-small, ImageNet weights, new final FC 1024->10",
        dict(_TRANSFER_TRAIN),
    ),
    "shufflenet_v2_x0_5": Preset(
        "transfer", "ShuffleNetV2Transfer", dict(_TRANSFER),
        "A", "torchvision ShuffleNetV2 x0.5, ImageNet weights, new FC 1024->10",
        dict(_TRANSFER_TRAIN),
    ),
    # --- vision transformers (vit.py) ---
    "vit_tiny": Preset(
        "vit", "ViTTiny",
        {"image_size": 64, "patch_size": 4, "hidden_size": 16, "num_layers": 2, "num_heads": 2,
         "mlp_ratio": 4.0, "dropout": 0.0},
        "C", "input resized to 64x64, 4x4 patches, class token, 2 layers, 2 heads, hidden 16",
        {"eval_batch_size": 500},
    ),
    "vit_simple": Preset(
        "vit", "ViTSimple", {"patch_size": 7, **_VIT_E},
        "E", "7x7 patches (4x4 map), 5 BatchNorm encoder blocks, hidden 64, 8 heads, MLP x8, GAP, linear head",
    ),
    "vit_dwconv": Preset(
        "vit", "ViTDWConv", {"patch_size": 7, **_VIT_E},
        "E", "base ViT with every block Encoder(x) + DW(x), DW = BN, GELU, depthwise 3x3 on the block input",
    ),
    "vit_patchless": Preset(
        "vit", "ViTPatchless", dict(_VIT_E),
        "E", "base ViT with a 3x3 stride-2 conv instead of patches (14x14 map, 196 tokens)",
        {"eval_batch_size": 250},
    ),
    # --- fmnist's own (fmnist.bench speedrun) ---
    "speedrun": Preset(
        "speedrun", "SpeedrunCNN", {"widths": [32, 64, 128], "dropout": 0.1, "tta_flip": True},
        "fmnist", "fmnist's speedrun net: conv-BN 32 @28, pool, 64 @14, pool, 128 @7, FC; flip TTA at eval",
    ),
}

TRANSFER_WEIGHTS: dict[str, tuple[str, str]] = {
    "resnet18": ("ResNet18_Weights.IMAGENET1K_V1", "https://download.pytorch.org/models/resnet18-f37072fd.pth"),
    "mobilenet_v3_small": (
        "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
        "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth",
    ),
    "shufflenet_v2_x0_5": (
        "ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1",
        "https://download.pytorch.org/models/shufflenetv2_x0.5-f707e7126e.pth",
    ),
}
"""Transfer architecture -> (torchvision weights enum member, its download URL); kept here so the
workflow can check for the files without importing torch (a test checks them against torchvision)."""


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError would print the repr
        return str(self.args[0])


def _is_user_arch(name: str) -> bool:
    """A class in the user's own module, "MODULE:CLASS" (fmnist.usermodel, imported only for one: a
    preset's run loads no module outside its code identity)."""
    return ":" in name


def known_models() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset `name`; a user's own class ("my_models:MyNet", fmnist.usermodel) is a preset of no
    arguments of its own (its args are the config's), family "user"."""
    if _is_user_arch(name):
        from fmnist import usermodel

        usermodel.split_arch(name)
        return Preset("user", name, {}, "own", f"user model {name}")
    try:
        return PRESETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model architecture {name!r}.{hint} Known models: {', '.join(known_models())}"
        ) from None


def check_args(name: str, args: dict[str, Any]) -> None:
    """Raise ValueError naming any argument the preset's constructor does not take (for a user's own
    class: also one it needs, or a module or class that is not there; no code is run)."""
    if _is_user_arch(name):
        from fmnist import usermodel

        usermodel.check_args(name, args)
        return
    preset = get_preset(name)
    unknown = sorted(set(args) - set(preset.args))
    if unknown:
        allowed = ", ".join(sorted(preset.args)) or "(none)"
        raise ValueError(
            f"model {name!r} takes no argument {', '.join(map(repr, unknown))}; its arguments: {allowed}"
        )


def build_model(name: str, args: dict[str, Any] | None = None, num_classes: int = 10):
    """Instantiate the preset `name` with its default arguments updated by `args` (a user's own class:
    with `args`, checked to map (N, 1, 28, 28) to (N, num_classes))."""
    if _is_user_arch(name):
        from fmnist import usermodel

        return usermodel.build(name, args, num_classes)
    preset = get_preset(name)
    args = dict(args or {})
    check_args(name, args)
    module = importlib.import_module(f"fmnist.models.{preset.module}")
    return getattr(module, preset.cls)(num_classes=num_classes, **{**preset.args, **args})


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights a model needs are not on this machine (the message says where to put them)."""


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch: $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub,
    else ~/.cache/torch/hub."""
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))) / "hub"


def weights_file(arch: str, args: dict[str, Any], hub_dir: Path | None = None) -> Path | None:
    """The checkpoint file model `arch` with `args` will load, or None when it loads none."""
    if arch not in TRANSFER_WEIGHTS:
        return None
    full = {**get_preset(arch).args, **(args or {})}
    if full.get("weights_path"):
        return Path(os.path.expanduser(str(full["weights_path"])))
    if not full.get("pretrained"):
        return None
    url = TRANSFER_WEIGHTS[arch][1]
    return (hub_dir or torch_hub_dir()) / "checkpoints" / url.rsplit("/", 1)[1]


def check_weights(arch: str, args: dict[str, Any], hub_dir: Path | None = None) -> Path | None:
    """The weights file `arch` needs, if any; raise WeightsNotFoundError, naming the file, the
    directory to put it in and where to fetch it, when it is missing. Imports no torch, so the
    workflow can call it while it parses its config."""
    path = weights_file(arch, args, hub_dir)
    if path is None or path.is_file():
        return path
    enum, url = TRANSFER_WEIGHTS[arch]
    if (args or {}).get("weights_path"):
        raise WeightsNotFoundError(
            f"model {arch!r}: weights_path {str(path)!r} does not exist. Point weights_path at a "
            f"state_dict of torchvision's {arch} (e.g. {url.rsplit('/', 1)[1]} from {url})."
        )
    raise WeightsNotFoundError(
        f"model {arch!r} with pretrained: true needs torchvision's {enum} weights, file "
        f"{path.name!r}, in {str(path.parent)!r} (torch hub's cache; set TORCH_HOME to move it), "
        f"and it is not there. This machine does not download it: fetch {url} on a connected machine "
        f"and copy it to {str(path)!r}, or set the model argument weights_path: /path/to/{path.name}, "
        "or pretrained: false to train from scratch."
    )

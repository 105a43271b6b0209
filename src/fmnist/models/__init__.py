"""The model registry: every named preset, its family module, constructor arguments and source report.

This module imports no torch, so the workflow can check model names and arguments when it
parses its config; `build_model` imports a family module only when a model is built.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
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
    """Report id (A-E, see STUDY.md) the architecture comes from."""
    summary: str
    train: dict[str, Any] = field(default_factory=dict)
    """Training overrides the report used with this model (applied before augmentation and setting)."""


PRESETS: dict[str, Preset] = {
    "standard_cnn": Preset(
        "cnn", "StandardCNN", {"channels": [32, 64], "hidden": 128, "dilation": 1, "dropout": 0.0},
        "B", "conv 1->32 3x3, pool, conv 32->64 3x3, pool, FC 3136->128, FC 128->10",
    ),
    "lenet_like": Preset(
        "cnn", "LeNetLike", {"dropout": 0.5},
        "D", "three 5x5 conv-relu-pool blocks (16, 32, 64), FC 128, FC 256, FC 10, dropout 0.5",
    ),
    "vgg_like": Preset(
        "cnn", "VGGLike", {"dropout": 0.4},
        "D", "[conv-BN-relu]x2 per stage (64, 128, 256), pool + dropout 0.4 between, global pool, FC 10",
    ),
    "speedrun": Preset(
        "speedrun", "SpeedrunCNN", {"widths": [32, 64, 128], "dropout": 0.1, "tta_flip": True},
        "-", "fmnist's speedrun net: conv-BN 32 @28, pool, 64 @14, pool, 128 @7, FC; flip TTA at eval",
    ),
}


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError would print the repr
        return str(self.args[0])


def known_models() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model architecture {name!r}.{hint} Known models: {', '.join(known_models())}"
        ) from None


def check_args(name: str, args: dict[str, Any]) -> None:
    """Raise ValueError naming any argument the preset's constructor does not take."""
    preset = get_preset(name)
    unknown = sorted(set(args) - set(preset.args))
    if unknown:
        allowed = ", ".join(sorted(preset.args)) or "(none)"
        raise ValueError(
            f"model {name!r} takes no argument {', '.join(map(repr, unknown))}; its arguments: {allowed}"
        )


def build_model(name: str, args: dict[str, Any] | None = None, num_classes: int = 10):
    """Instantiate the preset `name` with its default arguments updated by `args`."""
    preset = get_preset(name)
    args = dict(args or {})
    check_args(name, args)
    module = importlib.import_module(f"fmnist.models.{preset.module}")
    return getattr(module, preset.cls)(num_classes=num_classes, **{**preset.args, **args})

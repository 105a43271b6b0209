"""Batched training augmentations on the training device, each image with its own random draw.

Input: images `x` as float (N, C, H, W) in [0, 1] (0 is the black background) and integer labels
`y` (N,). Output: augmented images and a target that is either the labels (N,) or soft targets
(N, num_classes) summing to 1 for augmentations that mix images. Randomness comes from torch's
default generator of x's device, so `torch.manual_seed(seed)` makes every batch repeatable.
Partners for mixing are the batch rolled by one, so the batch must already be shuffled.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class Augmentation:
    """Base class: identity. `mixes_labels` tells the trainer its targets may be soft."""

    mixes_labels = False

    def __init__(self, num_classes: int = 10, **params: Any) -> None:
        self.num_classes = num_classes
        self.params = params

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"


def uniform(n: int, low: float, high: float, device) -> torch.Tensor:
    return torch.rand(n, device=device) * (high - low) + low


def affine(
    x: torch.Tensor,
    angle_deg: torch.Tensor,
    translate: torch.Tensor,
    flip: torch.Tensor,
    scale: torch.Tensor | None = None,
    shear_deg: torch.Tensor | None = None,
) -> torch.Tensor:
    """Warp each image by its own flip -> rotate/scale/shear -> translate, filling with 0.

    angle_deg, flip (bool) and scale: (N,); translate: (N, 2) as fractions of width/height.
    Matches torchvision's RandomHorizontalFlip followed by RandomAffine up to the sampling of
    translations (continuous here, whole pixels there) and bilinear interpolation.
    """
    n = x.shape[0]
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    a = torch.deg2rad(angle_deg.to(dtype))
    cos, sin = torch.cos(a), torch.sin(a)
    # Output -> input coordinates (affine_grid convention): inverse of the forward warp.
    inv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # (N, 2, 2)
    if shear_deg is not None:
        sh = torch.tan(torch.deg2rad(shear_deg.to(dtype)))
        shear_inv = torch.zeros(n, 2, 2, device=x.device, dtype=dtype)
        shear_inv[:, 0, 0] = 1
        shear_inv[:, 1, 1] = 1
        shear_inv[:, 0, 1] = -sh
        inv = shear_inv @ inv
    if scale is not None:
        inv = inv / scale.to(dtype).view(n, 1, 1)
    sign = torch.where(flip, -1.0, 1.0).to(dtype)
    inv = inv * torch.stack([sign, torch.ones_like(sign)], -1).view(n, 2, 1)  # flip rows: x -> -x
    t = translate.to(dtype) * 2.0  # fractions of the size -> normalised [-1, 1] coordinates
    offset = -(inv @ t.unsqueeze(-1))  # (N, 2, 1)
    theta = torch.cat([inv, offset], dim=2)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


class FlipAffine(Augmentation):
    """Report D's RandomHorizontalFlip(flip_p) + RandomAffine(degrees, translate=(t, t)), per image."""

    def __call__(self, x, y):
        n, dev = x.shape[0], x.device
        p = self.params
        flip = torch.rand(n, device=dev) < p["flip_p"]
        angle = uniform(n, -p["degrees"], p["degrees"], dev)
        shift = uniform(2 * n, -p["translate"], p["translate"], dev).view(n, 2)
        return affine(x, angle, shift, flip), y


def one_hot(y: torch.Tensor, num_classes: int, dtype=torch.float32) -> torch.Tensor:
    return F.one_hot(y, num_classes).to(dtype)


def beta(alpha: float, n: int, device) -> torch.Tensor:
    """n draws of Beta(alpha, alpha) from the device's default generator (no host sync)."""
    conc = torch.full((2 * n,), float(alpha), device=device)
    g = torch._standard_gamma(conc).view(2, n)
    return g[0] / (g[0] + g[1]).clamp_min(torch.finfo(g.dtype).tiny)


class MixUp(Augmentation):
    """MixUp (Zhang et al. 2018) with one lambda ~ Beta(alpha, alpha) per image; partner = batch rolled by one."""

    mixes_labels = True

    def __call__(self, x, y):
        n = x.shape[0]
        lam = beta(self.params["alpha"], n, x.device)
        x2, y2 = x.roll(1, 0), y.roll(1, 0)
        lam_x = lam.view(n, *([1] * (x.dim() - 1))).to(x.dtype)
        mixed = lam_x * x + (1 - lam_x) * x2
        lam_t = lam.view(n, 1)
        target = lam_t * one_hot(y, self.num_classes) + (1 - lam_t) * one_hot(y2, self.num_classes)
        return mixed, target


REGISTRY: dict[str, type[Augmentation]] = {
    "none": Augmentation,
    "flip_affine": FlipAffine,
    "mixup": MixUp,
}


def build(kind: str, params: dict[str, Any], num_classes: int = 10) -> Augmentation:
    return REGISTRY[kind](num_classes=num_classes, **params)


__all__ = ["Augmentation", "FlipAffine", "MixUp", "affine", "beta", "build"]

"""Batched training augmentations on the training device, each image with its own random draw.

Input: images `x` as float (N, C, H, W) in [0, 1] (0 is the black background) and integer labels
`y` (N,). Output: augmented images and a target that is either the labels (N,) or soft targets
(N, num_classes) summing to 1 for augmentations that mix images. Randomness comes from torch's
default generator of x's device, so `torch.manual_seed(seed)` makes every batch repeatable.
Partners for mixing are the batch rolled by one, so the batch must already be shuffled.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from fmnist.augment import RANDAUGMENT_OPS  # the op names, shared with the torch-free registry


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
    shear_y_deg: torch.Tensor | None = None,
    mode: str = "nearest",
    center: torch.Tensor | None = None,
) -> torch.Tensor:
    """Warp each image by its own flip -> rotate/scale/shear about a fixed point -> translate, filling with 0.

    angle_deg, flip (bool), scale, shear_deg (along x) and shear_y_deg (along y): (N,);
    translate: (N, 2) as fractions of width/height; center: (N, 2), each image's fixed point in
    [-1, 1] coordinates (x, y): (0, 0), the default, is the image centre, (-1, -1) its top-left
    corner (where torchvision's RandAugment shears); mode: "nearest" (torchvision's default for
    RandomAffine and RandAugment: pixels are moved, never blended) or "bilinear" (blends neighbours,
    which blurs images that test time never sees).
    With mode "nearest" and whole-pixel translations this is torchvision's RandomHorizontalFlip
    followed by F.affine on the same image, up to ties in the rounding of a pixel's source position.
    """
    n = x.shape[0]
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    a = torch.deg2rad(angle_deg.to(dtype))
    cos, sin = torch.cos(a), torch.sin(a)
    # Output -> input coordinates (affine_grid convention): inverse of the forward warp.
    inv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # (N, 2, 2)
    for shear, (row, col) in ((shear_deg, (0, 1)), (shear_y_deg, (1, 0))):
        if shear is not None:  # x-shear moves x by y (entry 0,1); y-shear moves y by x (entry 1,0)
            shear_inv = torch.eye(2, device=x.device, dtype=dtype).repeat(n, 1, 1)
            shear_inv[:, row, col] = -torch.tan(torch.deg2rad(shear.to(dtype)))
            inv = shear_inv @ inv
    if scale is not None:
        inv = inv / scale.to(dtype).view(n, 1, 1)
    sign = torch.where(flip, -1.0, 1.0).to(dtype)
    inv = inv * torch.stack([sign, torch.ones_like(sign)], -1).view(n, 2, 1)  # flip rows: x -> -x
    t = translate.to(dtype) * 2.0  # fractions of the size -> normalised [-1, 1] coordinates
    # Forward: out = A (in - c) + c + t, so in = inv out + c - inv (c + t).
    c = torch.zeros_like(t) if center is None else center.to(device=x.device, dtype=dtype)
    offset = c.unsqueeze(-1) - inv @ (c + t).unsqueeze(-1)  # (N, 2, 1)
    theta = torch.cat([inv, offset], dim=2)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode="zeros", align_corners=False)


def whole_pixels(shift: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Shifts (N, 2) as fractions of (width, height), rounded to whole pixels as torchvision's RandomAffine does."""
    size = torch.tensor([width, height], device=shift.device, dtype=shift.dtype)
    return torch.round(shift * size) / size


class FlipAffine(Augmentation):
    """Report D's RandomHorizontalFlip(flip_p) + RandomAffine(degrees, translate=(t, t)), per image.

    As torchvision draws them: angle ~ U(-degrees, degrees), shifts ~ U(-t, t) of the width and
    height rounded to whole pixels, sampled with `interpolation` (torchvision's default: nearest).
    """

    def __call__(self, x, y):
        n, dev = x.shape[0], x.device
        p = self.params
        flip = torch.rand(n, device=dev) < p["flip_p"]
        angle = uniform(n, -p["degrees"], p["degrees"], dev)
        shift = uniform(2 * n, -p["translate"], p["translate"], dev).view(n, 2)
        shift = whole_pixels(shift, x.shape[-2], x.shape[-1])
        return affine(x, angle, shift, flip, mode=p["interpolation"]), y


def one_hot(y: torch.Tensor, num_classes: int, dtype=torch.float32) -> torch.Tensor:
    return F.one_hot(y, num_classes).to(dtype)


def beta(alpha: float, n: int, device) -> torch.Tensor:
    """n draws of Beta(alpha, alpha) from the device's default generator (no host sync)."""
    conc = torch.full((2 * n,), float(alpha), device=device)
    g = torch._standard_gamma(conc).view(2, n)
    return g[0] / (g[0] + g[1]).clamp_min(torch.finfo(g.dtype).tiny)


class Flip(Augmentation):
    """Horizontal flip of each image with probability p: an exact mirror, no interpolation."""

    def __call__(self, x, y):
        flip = torch.rand(x.shape[0], device=x.device) < self.params["p"]
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x), y


def boxes_mask(top: torch.Tensor, left: torch.Tensor, bottom: torch.Tensor, right: torch.Tensor,
               height: int, width: int) -> torch.Tensor:
    """(N, 1, H, W) bool mask of each image's rectangle [top, bottom) x [left, right) (integer (N,) bounds)."""
    rows = torch.arange(height, device=top.device)
    cols = torch.arange(width, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])  # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])  # (N, W)
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)


def mix_targets(y: torch.Tensor, y2: torch.Tensor, lam: torch.Tensor, num_classes: int) -> torch.Tensor:
    """lam * one_hot(y) + (1 - lam) * one_hot(y2), row by row: (N, num_classes), rows sum to 1."""
    lam = lam.view(-1, 1).float()
    return lam * one_hot(y, num_classes) + (1 - lam) * one_hot(y2, num_classes)


def mixup(x, y, alpha: float, num_classes: int, per_batch: bool = False):
    """MixUp with one lambda ~ Beta(alpha, alpha) per image (or one for the batch); partner = the batch rolled by one."""
    n = x.shape[0]
    lam = beta(alpha, 1, x.device).expand(n) if per_batch else beta(alpha, n, x.device)
    x2, y2 = x.roll(1, 0), y.roll(1, 0)
    lam_x = lam.view(n, *([1] * (x.dim() - 1))).to(x.dtype)
    return lam_x * x + (1 - lam_x) * x2, mix_targets(y, y2, lam, num_classes)


def cutmix(x, y, alpha: float, num_classes: int):
    """CutMix: each image gets its own box of its partner (the batch rolled by one) pasted in.

    As torchvision's v2.CutMix but per image: lambda ~ Beta(alpha, alpha), a box of side
    sqrt(1 - lambda) of the image centred on a uniform pixel, clipped at the border; the target
    weight of the partner is the pasted area fraction after clipping. Returns (x, target, mask).
    """
    n, _, h, w = x.shape
    lam = beta(alpha, n, x.device)
    cut = torch.sqrt(1.0 - lam)
    half_h = (0.5 * h * cut).floor().long()
    half_w = (0.5 * w * cut).floor().long()
    cy = torch.randint(0, h, (n,), device=x.device)
    cx = torch.randint(0, w, (n,), device=x.device)
    top, bottom = (cy - half_h).clamp(min=0), (cy + half_h).clamp(max=h)
    left, right = (cx - half_w).clamp(min=0), (cx + half_w).clamp(max=w)
    mask = boxes_mask(top, left, bottom, right, h, w)
    pasted = ((bottom - top) * (right - left)).float() / (h * w)
    x2, y2 = x.roll(1, 0), y.roll(1, 0)
    return torch.where(mask, x2, x), mix_targets(y, y2, 1.0 - pasted, num_classes), mask


class MixUp(Augmentation):
    """MixUp (Zhang et al. 2018) with one lambda ~ Beta(alpha, alpha) per image; partner = batch rolled by one.

    `per_batch` draws one lambda for the whole batch, as report B's `mixup_data` does (its partner
    is a random permutation of the batch, which may pair an image with itself; ours never does).
    """

    mixes_labels = True

    def __call__(self, x, y):
        return mixup(x, y, self.params["alpha"], self.num_classes, self.params.get("per_batch", False))


class CutMix(Augmentation):
    """CutMix (Yun et al. 2019) with a box per image; target weight = pasted area fraction."""

    mixes_labels = True

    def __call__(self, x, y):
        out, target, _ = cutmix(x, y, self.params["alpha"], self.num_classes)
        return out, target


class CutMixMixUp(Augmentation):
    """Report C: per batch, CutMix(cutmix_alpha) with probability switch_prob, else MixUp(mixup_alpha).

    The switch is per batch as in timm's Mixup (mode 'batch', prob 1.0) and torchvision's
    RandomChoice([CutMix, MixUp]); lambdas and boxes are per image. Both candidates are computed
    and one is selected on the device, so the choice never waits for the host.
    """

    mixes_labels = True

    def __call__(self, x, y):
        p = self.params
        xc, tc, _ = cutmix(x, y, p["cutmix_alpha"], self.num_classes)
        xm, tm = mixup(x, y, p["mixup_alpha"], self.num_classes)
        use_cutmix = torch.rand((), device=x.device) < p["switch_prob"]
        return torch.where(use_cutmix, xc, xm), torch.where(use_cutmix, tc, tm)


class RandomErasing(Augmentation):
    """Random erasing (Zhong et al. 2020), as torchvision's RandomErasing but a rectangle per image.

    With probability p an image gets a rectangle of area fraction ~ U(scale) and aspect ratio
    log-uniform in `ratio` (clipped to the image instead of re-drawn) set to `value`: a pixel value
    in [0, 1] (0 is the background) or "random" for uniform noise per pixel.
    """

    def __call__(self, x, y):
        p = self.params
        n, _, h, w = x.shape
        dev = x.device
        area = uniform(n, *p["scale"], dev) * (h * w)
        log_r = uniform(n, math.log(p["ratio"][0]), math.log(p["ratio"][1]), dev)
        r = torch.exp(log_r)
        eh = torch.sqrt(area * r).round().long().clamp(1, h)
        ew = torch.sqrt(area / r).round().long().clamp(1, w)
        top = (torch.rand(n, device=dev) * (h - eh + 1)).floor().long()
        left = (torch.rand(n, device=dev) * (w - ew + 1)).floor().long()
        apply = torch.rand(n, device=dev) < p["p"]
        mask = boxes_mask(top, left, top + eh, left + ew, h, w) & apply.view(n, 1, 1, 1)
        if p["value"] == "random":
            fill = torch.rand_like(x)
        else:
            fill = torch.full_like(x, float(p["value"]))
        return torch.where(mask, fill, x), y


GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


class RandAugment(Augmentation):
    """RandAugment (Cubuk et al. 2020): num_ops operations in a row, each image drawing its own
    from torchvision's 14 (RANDAUGMENT_OPS, "color" included, so every op is drawn 1/14 as there).

    Magnitudes follow torchvision's RandAugment: at magnitude M of num_magnitude_bins bins
    (f = M / (bins - 1)) rotation 30f degrees, shear tan = 0.3f, translation 150/331 f of the size,
    brightness/contrast/sharpness factor 1 +- 0.9f, posterize to 8 - round(4f) bits, solarize above
    1 - f; signed ops take a random sign per image. As torchvision's: translations are whole pixels
    (int(150/331 f size)), rotations turn about the image centre and shears about its top-left corner,
    sampled with `interpolation` (torchvision's default: nearest), filling with 0. Every image draws its op
    (and sign) per round. On the CPU each op runs on the images that drew it; on an accelerator every
    op runs on the whole batch and each image keeps its own, so nothing waits for the host. Both
    give the same images.
    """

    def __init__(self, num_classes: int = 10, **params):
        super().__init__(num_classes, **params)
        ops = list(params["ops"])
        unknown = sorted(set(ops) - set(RANDAUGMENT_OPS))
        if unknown or not ops:
            raise ValueError(
                f"randaugment: unknown ops {unknown} (or none given); choose from {', '.join(RANDAUGMENT_OPS)}"
            )
        self.ops = ops
        f = params["magnitude"] / max(1, params["num_magnitude_bins"] - 1)
        self.rotate_deg = 30.0 * f
        self.shear_deg = math.degrees(math.atan(0.3 * f))
        self.translate = 150.0 / 331.0 * f
        self.enhance = 0.9 * f
        self.bits = int(8 - round(params["magnitude"] / ((params["num_magnitude_bins"] - 1) / 4)))
        self.threshold = 1.0 - f

    def shift(self, size: int) -> float:
        """The translate ops' shift as a fraction of `size`: torchvision's whole pixels, int(150/331 f size)."""
        return int(self.translate * size) / size

    def apply_op(self, name: str, x: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        """Operation `name` on every image of x, signed ops with each image's sign (N,) of +-1."""
        from torchvision.transforms.v2 import functional as TF

        n = x.shape[0]
        zero = torch.zeros(n, device=x.device)
        no_flip = torch.zeros(n, dtype=torch.bool, device=x.device)
        no_shift = torch.zeros(n, 2, device=x.device)
        factor = (1.0 + sign * self.enhance).view(n, 1, 1, 1).to(x.dtype)
        if name == "identity":
            return x
        if name == "color":  # saturation: nothing to change on one channel (torchvision returns it as is)
            return x if x.shape[1] == 1 else (factor * x + (1 - factor) * TF.rgb_to_grayscale(x, 3)).clamp(0, 1)
        mode = self.params["interpolation"]
        if name == "rotate":
            return affine(x, sign * self.rotate_deg, no_shift, no_flip, mode=mode)
        if name in ("shear_x", "shear_y"):  # torchvision shears about the top-left corner
            corner = torch.full((n, 2), -1.0, device=x.device)
            shear = sign * self.shear_deg
            if name == "shear_x":
                return affine(x, zero, no_shift, no_flip, shear_deg=shear, mode=mode, center=corner)
            return affine(x, zero, no_shift, no_flip, shear_y_deg=shear, mode=mode, center=corner)
        if name == "translate_x":
            return affine(x, zero, torch.stack([sign * self.shift(x.shape[-1]), zero], -1), no_flip, mode=mode)
        if name == "translate_y":
            return affine(x, zero, torch.stack([zero, sign * self.shift(x.shape[-2])], -1), no_flip, mode=mode)
        # PIL's ImageEnhance: blend the image with a degenerate version (black, its mean, its blur).
        if name == "brightness":
            return (factor * x).clamp(0, 1)
        if name == "contrast":
            return (factor * x + (1 - factor) * TF.adjust_contrast(x, 0.0)).clamp(0, 1)
        if name == "sharpness":
            return (factor * x + (1 - factor) * TF.adjust_sharpness(x, 0.0)).clamp(0, 1)
        if name == "posterize":
            return TF.posterize(x, self.bits)
        if name == "solarize":
            return TF.solarize(x, self.threshold)
        if name == "autocontrast":
            return TF.autocontrast(x)
        if name == "equalize":
            return TF.equalize(x)
        raise ValueError(f"randaugment: unknown op {name!r}")

    def _round(self, x: torch.Tensor, grouped: bool) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        op = torch.randint(0, len(self.ops), (n,), device=dev)  # index into self.ops, per image
        sign = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0)
        out = x.clone()
        chosen = {name: op == i for i, name in enumerate(self.ops)}
        geometric = [g for g in GEOMETRIC_OPS if g in chosen]
        if geometric:
            # All geometric ops are one warp with per-image parameters (zero where not drawn).
            def part(name: str, value: float) -> torch.Tensor:
                picked = chosen.get(name, torch.zeros_like(sign, dtype=torch.bool))
                return torch.where(picked, sign * value, torch.zeros_like(sign))

            angle = part("rotate", self.rotate_deg)
            shear_x, shear_y = part("shear_x", self.shear_deg), part("shear_y", self.shear_deg)
            shift = torch.stack([part("translate_x", self.shift(x.shape[-1])),
                                 part("translate_y", self.shift(x.shape[-2]))], -1)
            warp = torch.stack([chosen[g] for g in geometric]).any(0)
            mode = self.params["interpolation"]
            sheared = (shear_x != 0) | (shear_y != 0)
            center = torch.where(sheared, -1.0, 0.0).unsqueeze(1).expand(n, 2)  # shears: the top-left corner
            no_flip = torch.zeros_like(warp)
            if grouped:
                idx = warp.nonzero().squeeze(1)
                if len(idx):
                    out[idx] = affine(x[idx], angle[idx], shift[idx], no_flip[idx], shear_deg=shear_x[idx],
                                      shear_y_deg=shear_y[idx], mode=mode, center=center[idx])
            else:
                warped = affine(x, angle, shift, no_flip, shear_deg=shear_x, shear_y_deg=shear_y, mode=mode,
                                center=center)
                out = torch.where(warp.view(n, 1, 1, 1), warped, out)
        for name, picked in chosen.items():
            if name == "identity" or name in GEOMETRIC_OPS or (name == "color" and x.shape[1] == 1):
                continue
            if grouped:  # CPU: work only on the images that drew this op
                idx = picked.nonzero().squeeze(1)
                if len(idx):
                    out[idx] = self.apply_op(name, x[idx], sign[idx])
            else:  # accelerator: every op on the whole batch, each image keeps its own (no host sync)
                out = torch.where(picked.view(n, 1, 1, 1), self.apply_op(name, x, sign), out)
        return out

    def __call__(self, x, y, grouped: bool | None = None):
        grouped = x.device.type == "cpu" if grouped is None else grouped
        for _ in range(self.params["num_ops"]):
            x = self._round(x, grouped)
        return x, y


class Chain(Augmentation):
    """Steps applied one after the other, each with its own parameters and each image its own draws.

    Report E's pipeline is RandAugment(2, 9) then MixUp(alpha 2): its code transforms every image by
    RandAugment and then mixes it with another, RandAugmented, image. Only the last step may mix
    labels (checked when the config is resolved), so every earlier step sees integer labels.
    """

    def __init__(self, num_classes: int = 10, **params: Any) -> None:
        super().__init__(num_classes, **params)
        self.steps = [
            build(step["kind"], {k: v for k, v in step.items() if k != "kind"}, num_classes)
            for step in params["steps"]
        ]
        self.mixes_labels = any(step.mixes_labels for step in self.steps)

    def __call__(self, x, y):
        for step in self.steps:
            x, y = step(x, y)
        return x, y


REGISTRY: dict[str, type[Augmentation]] = {
    "none": Augmentation,
    "flip": Flip,
    "flip_affine": FlipAffine,
    "cutmix": CutMix,
    "mixup": MixUp,
    "cutmix_mixup": CutMixMixUp,
    "randaugment": RandAugment,
    "random_erasing": RandomErasing,
    "chain": Chain,
}


def build(kind: str, params: dict[str, Any], num_classes: int = 10) -> Augmentation:
    return REGISTRY[kind](num_classes=num_classes, **params)


__all__ = [
    "Augmentation", "Chain", "CutMix", "CutMixMixUp", "Flip", "FlipAffine", "MixUp", "RandAugment", "RandomErasing",
    "affine", "beta", "build", "cutmix", "mixup",
]

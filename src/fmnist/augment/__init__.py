"""The augmentation registry: each kind's parameters and defaults, importable without torch.

Every kind name is also a ready augmentation name in studies (with these defaults); a config's
`augmentations:` section names variants, e.g. `mixup_strong: {kind: mixup, alpha: 1.0}`. Kind
`chain` applies several kinds in a row, each with its own parameters:
`{kind: chain, steps: [{kind: randaugment, num_ops: 2, magnitude: 9}, {kind: mixup, alpha: 2.0}]}`.
The batched implementations live in fmnist.augment.batched.
"""

from __future__ import annotations

import difflib
from typing import Any

RANDAUGMENT_OPS = [
    "identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate",
    "brightness", "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize",
]
"""torchvision's RandAugment op space, all 14 in its order (`_AUGMENTATION_SPACE`): each image draws
one uniformly. "color" (saturation) is a no-op on grayscale, but it is kept: leaving it out would
draw each of the other ops 1/13 of the time instead of torchvision's 1/14."""

KINDS: dict[str, dict[str, Any]] = {
    "none": {},
    "flip": {"p": 0.5},
    "flip_affine": {"flip_p": 0.5, "degrees": 10.0, "translate": 0.1, "interpolation": "nearest"},
    "cutmix": {"alpha": 1.0},
    "mixup": {"alpha": 0.2, "per_batch": False},
    "cutmix_mixup": {"cutmix_alpha": 1.0, "mixup_alpha": 0.2, "switch_prob": 0.5},
    "randaugment": {"num_ops": 2, "magnitude": 9, "num_magnitude_bins": 31, "ops": RANDAUGMENT_OPS,
                    "interpolation": "nearest"},
    "random_erasing": {"p": 0.5, "scale": [0.02, 0.33], "ratio": [0.3, 3.3], "value": 0.0},
    # Report E's published pipeline (its utils/data_augmentation.py, augmentation="all").
    "chain": {"steps": [{"kind": "randaugment", "num_ops": 2, "magnitude": 9}, {"kind": "mixup", "alpha": 2.0}]},
}
"""kind -> default parameters (their keys are the parameters a config may set)."""

DESCRIPTIONS: dict[str, str] = {
    "none": "no augmentation",
    "flip": "horizontal flip with probability p, per image (exact mirror)",
    "flip_affine": "report D: horizontal flip p=0.5, rotation +-10 degrees, translation +-10% in whole pixels "
                   "(per image), sampled as torchvision: interpolation nearest (or bilinear)",
    "cutmix": "CutMix: a box of the partner image pasted in, box and l ~ Beta(alpha, alpha) per image, "
              "target weight = pasted area fraction",
    "mixup": "MixUp: x = l*x_i + (1-l)*x_j, soft targets likewise, l ~ Beta(alpha, alpha) per image "
             "(per_batch: one l for the whole batch, as report B's code)",
    "cutmix_mixup": "report C: per batch CutMix(cutmix_alpha) with probability switch_prob, else "
                    "MixUp(mixup_alpha) (timm's Mixup, per-batch switch)",
    "randaugment": "RandAugment: num_ops ops of magnitude M (of num_magnitude_bins), op and sign drawn per image; "
                   "geometric ops sampled with interpolation nearest (torchvision's default) or bilinear",
    "random_erasing": "random erasing: with probability p a rectangle per image (area fraction in scale, "
                      "aspect in ratio) set to value (0 = background, or 'random' noise)",
    "chain": "steps applied in order to each batch, each a kind with its own parameters and each image its own "
             "draws; a label-mixing step (mixup, cutmix, cutmix_mixup) only last. Default: report E's "
             "RandAugment(2, 9) then MixUp(alpha 2)",
}

MIXING_KINDS = ("mixup", "cutmix", "cutmix_mixup")
"""Kinds whose targets are soft: a chain takes at most one, as its last step."""

# Allowed ranges of numeric parameters: (low, high), inclusive; checked when a config is resolved.
_RANGES: dict[str, tuple[float, float]] = {
    "p": (0.0, 1.0), "flip_p": (0.0, 1.0), "switch_prob": (0.0, 1.0), "degrees": (0.0, 180.0),
    "translate": (0.0, 1.0), "alpha": (1e-6, 1e6), "cutmix_alpha": (1e-6, 1e6), "mixup_alpha": (1e-6, 1e6),
    "num_ops": (0, 20), "magnitude": (0, 1e6), "num_magnitude_bins": (2, 1e6),
}

_BOOLEANS = {"per_batch"}

INTERPOLATIONS = ("nearest", "bilinear")
"""How geometric ops sample the image: nearest moves pixels (torchvision's default), bilinear blends them."""


class UnknownAugmentationError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def known_kinds() -> list[str]:
    return sorted(KINDS)


def resolve(kind: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Full parameters for `kind`: defaults updated by `params`; raise on unknown kinds or keys."""
    if kind not in KINDS:
        close = difflib.get_close_matches(kind, KINDS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownAugmentationError(
            f"unknown augmentation kind {kind!r}.{hint} Known kinds: {', '.join(known_kinds())}"
        )
    params = dict(params or {})
    unknown = sorted(set(params) - set(KINDS[kind]))
    if unknown:
        allowed = ", ".join(sorted(KINDS[kind])) or "(none)"
        raise ValueError(
            f"augmentation kind {kind!r} takes no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters: {allowed}"
        )
    full = {**KINDS[kind], **params}
    if kind == "chain":
        return {"steps": _resolve_steps(full["steps"])}
    _check(kind, full)
    return full


def _resolve_steps(steps: Any) -> list[dict[str, Any]]:
    """A chain's steps, each resolved to {kind, **parameters}; raise naming the bad step."""
    if not isinstance(steps, list) or not steps:
        raise ValueError(
            "chain: steps must be a non-empty list of augmentations, e.g. "
            "[{kind: randaugment, num_ops: 2, magnitude: 9}, {kind: mixup, alpha: 2.0}]"
        )
    out = []
    for i, step in enumerate(steps, 1):
        if not isinstance(step, dict) or "kind" not in step:
            raise ValueError(f"chain: step {i} ({step!r}) must be a mapping with a kind, e.g. {{kind: flip}}")
        spec = dict(step)
        kind = spec.pop("kind")
        if kind == "chain":
            raise ValueError(f"chain: step {i} is itself a chain; list its steps in this chain instead")
        if "train" in spec:
            raise ValueError(f"chain: step {i} has training overrides (train:); put them on the chain itself")
        try:
            params = resolve(kind, spec)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"chain: step {i}: {exc}") from None
        if kind in MIXING_KINDS and i != len(steps):
            raise ValueError(
                f"chain: step {i} ({kind}) mixes labels, so it must be the last step; "
                "move it to the end of the steps (geometric and colour steps act before mixing)"
            )
        out.append({"kind": kind, **params})
    return out


def _check(kind: str, params: dict[str, Any]) -> None:
    """Raise ValueError naming a parameter whose value is out of range, with the allowed range."""
    for key, value in params.items():
        if key in _BOOLEANS and not isinstance(value, bool):
            raise ValueError(f"augmentation kind {kind!r}: {key}={value!r} must be true or false")
        if key in _RANGES:
            low, high = _RANGES[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(f"augmentation kind {kind!r}: {key}={value!r} must be a number in [{low:g}, {high:g}]")
    if "interpolation" in params and params["interpolation"] not in INTERPOLATIONS:
        raise ValueError(
            f"augmentation kind {kind!r}: interpolation={params['interpolation']!r} must be one of "
            f"{', '.join(INTERPOLATIONS)} (nearest is torchvision's default)"
        )
    if kind == "randaugment":
        if params["magnitude"] > params["num_magnitude_bins"] - 1:
            raise ValueError(
                f"randaugment: magnitude {params['magnitude']} exceeds num_magnitude_bins - 1 = "
                f"{params['num_magnitude_bins'] - 1}; lower magnitude or raise num_magnitude_bins"
            )
        unknown = sorted(set(params["ops"]) - set(RANDAUGMENT_OPS))
        if unknown or not params["ops"]:
            raise ValueError(f"randaugment: ops {unknown or '[]'} not known; choose from {', '.join(RANDAUGMENT_OPS)}")
    if kind == "random_erasing":
        for key, low, high in (("scale", 0.0, 1.0), ("ratio", 1e-3, 1e3)):
            v = params[key]
            if not (isinstance(v, list | tuple) and len(v) == 2 and low < v[0] <= v[1] <= high):
                raise ValueError(f"random_erasing: {key}={v!r} must be [min, max] with {low:g} < min <= max <= {high:g}")
        value = params["value"]
        if value != "random" and not (isinstance(value, int | float) and 0 <= value <= 1):
            raise ValueError(f"random_erasing: value={value!r} must be a pixel value in [0, 1] or 'random'")


def build_augmentation(kind: str, params: dict[str, Any] | None = None, num_classes: int = 10):
    """A callable `(x, y) -> (x, target)` on a batch; see fmnist.augment.batched."""
    from fmnist.augment import batched

    return batched.build(kind, resolve(kind, params), num_classes)

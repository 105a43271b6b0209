"""The augmentation registry: each kind's parameters and defaults, importable without torch.

Every kind name is also a ready augmentation name in studies (with these defaults); a config's
`augmentations:` section names variants, e.g. `mixup_strong: {kind: mixup, alpha: 1.0}`.
The batched implementations live in fmnist.augment.batched.
"""

from __future__ import annotations

import difflib
from typing import Any

KINDS: dict[str, dict[str, Any]] = {
    "none": {},
    "flip_affine": {"flip_p": 0.5, "degrees": 10.0, "translate": 0.1},
    "mixup": {"alpha": 0.2},
}
"""kind -> default parameters (their keys are the parameters a config may set)."""

DESCRIPTIONS: dict[str, str] = {
    "none": "no augmentation",
    "flip_affine": "report D: horizontal flip p=0.5, rotation +-10 degrees, translation +-10% (per image)",
    "mixup": "MixUp: x = l*x_i + (1-l)*x_j, soft targets likewise, l ~ Beta(alpha, alpha) per image",
}


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
    return {**KINDS[kind], **params}


def build_augmentation(kind: str, params: dict[str, Any] | None = None, num_classes: int = 10):
    """A callable `(x, y) -> (x, target)` on a batch; see fmnist.augment.batched."""
    from fmnist.augment import batched

    return batched.build(kind, resolve(kind, params), num_classes)

"""The augmentation gallery: every augmentation applied to the same real images, one row each, as a PNG for the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fmnist import augment, data  # noqa: E402
from fmnist.plots import tile  # noqa: E402


def pick_images(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of n images, the first of each class in turn (so a row shows n different classes)."""
    order = []
    for cls in range(int(labels.max()) + 1):
        hits = np.flatnonzero(labels == cls)
        if len(hits):
            order.append(hits[0])
    picked = order[:n]
    rest = [i for i in range(len(labels)) if i not in set(picked)]
    return np.asarray(picked + rest[: n - len(picked)])


def gallery(
    prepared_path: Path | str,
    out_png: Path | str,
    kinds: list[str] | dict[str, dict[str, Any]] | None = None,
    n: int = 8,
    seed: int = 0,
) -> Path:
    """Draw each augmentation applied to the same `n` test images (one row per augmentation) to `out_png`.

    `kinds`: augmentation kinds with their defaults, or a mapping name -> {kind, params...} (a
    config's `augmentations:` entries); default: every registered kind but none. Each row starts from the
    same seed, so rows differ only by the augmentation. Mixed images are captioned with their two
    largest target shares.
    """
    arrays, meta = data.load_prepared(prepared_path)
    classes = meta["classes"]
    images, labels = arrays["test_images"], arrays["test_labels"]
    idx = pick_images(labels, n)
    x = torch.from_numpy(images[idx]).unsqueeze(1).float() / 255.0  # (n, 1, 28, 28)
    y = torch.from_numpy(labels[idx].astype(np.int64))
    if kinds is None:  # registry order; the "original" row already shows `none`
        kinds = [k for k in augment.KINDS if k != "none"]
    specs = {k: {"kind": k} for k in kinds} if not isinstance(kinds, dict) else kinds
    rows = [("original", None)] + list(specs.items())

    pad = 2
    h, w = x.shape[-2:]
    # One Axes per row, the row's images tiled into one picture (matplotlib's cost is per Axes);
    # each image's caption is the x tick label under it. White gaps (gray: 1.0) part the images.
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.15 * n + 1.6, 1.3 * len(rows)), dpi=110, squeeze=False)
    for r, (name, spec) in enumerate(rows):
        if spec is None:
            out, target = x, y
        else:
            params = {k: v for k, v in spec.items() if k not in ("kind", "train")}
            aug = augment.build_augmentation(spec["kind"], params, num_classes=len(classes))
            torch.manual_seed(seed)
            out, target = aug(x, y)
        ax = axes[r, 0]
        ax.imshow(tile(out[:, 0].clamp(0, 1).numpy()[None], pad=pad, fill=1.0), cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_xticks([c * (w + pad) + (w - 1) / 2 for c in range(n)],
                      [caption(target[c], classes) for c in range(n)], fontsize=6)
        ax.set_yticks([])
        ax.tick_params(axis="x", length=0, pad=1)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center", labelpad=6)
    fig.suptitle(f"training augmentations on the same {n} test images (seed {seed})", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98), h_pad=0.3, w_pad=0.2)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def caption(target: torch.Tensor, classes: list[str]) -> str:
    """The class of a hard label, or the two largest shares of a soft target ('Coat .62 / Bag .38')."""
    short = [c.split("/")[0][:8] for c in classes]
    if target.dim() == 0:
        return short[int(target)]
    top = torch.topk(target, 2)
    parts = [f"{short[int(i)]} {float(v):.2f}" for v, i in zip(top.values, top.indices, strict=True) if v > 0.005]
    return "\n".join(parts)

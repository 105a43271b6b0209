"""The augmentation gallery: every registered augmentation kind applied to the same real training images."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def gallery(prepared_path: Path | str, out_png: Path | str, kinds: list[str] | None = None,
            n: int = 8, seed: int = 0) -> None:
    """One row per augmentation kind (default: all of fmnist.augment.KINDS with default parameters),
    each row the same `n` training images (one per class first) after that kind's batched transform."""
    import torch

    from fmnist import augment
    from fmnist.data import load_prepared

    arrays, meta = load_prepared(prepared_path)
    images, labels = arrays["train_images"], arrays["train_labels"]
    rng = np.random.default_rng(seed)
    # One image of each of the first n classes, so the row shows different garments.
    pick = [int(rng.choice(np.flatnonzero(labels == c))) for c in range(min(n, len(meta["classes"])))
            if (labels == c).any()]
    x0 = torch.from_numpy(images[pick]).float().div(255).unsqueeze(1)  # (n, 1, 28, 28) in [0, 1]
    y0 = torch.from_numpy(labels[pick].astype(np.int64))
    kinds = list(kinds or augment.KINDS)
    height = len(kinds) * 1.0 + 0.7  # 0.7 in for the title and the class names above the first row
    fig, axes = plt.subplots(len(kinds), len(pick), figsize=(len(pick) * 0.95 + 1.6, height),
                             dpi=100, squeeze=False)
    for r, kind in enumerate(kinds):
        torch.manual_seed(seed)
        aug = augment.build_augmentation(kind)
        x, _target = aug(x0.clone(), y0.clone())
        for j in range(len(pick)):
            ax = axes[r, j]
            ax.imshow(x[j, 0].clamp(0, 1).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(kind, rotation=0, ha="right", va="center", fontsize=9)
    for j, i in enumerate(pick):
        axes[0, j].set_title(meta["classes"][labels[i]], fontsize=7)
    fig.suptitle("Augmentations (default parameters) on the same training images", fontsize=10,
                 y=1 - 0.12 / height, va="top")
    fig.subplots_adjust(left=0.14, right=0.99, top=1 - 0.6 / height, bottom=0.01, wspace=0.05, hspace=0.08)
    fig.savefig(out_png)
    plt.close(fig)

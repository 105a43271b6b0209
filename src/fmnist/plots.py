"""Figures of one run (learning curves, confusion matrix) as PNG, drawn with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def learning_curves(history_csv: Path | str, out: Path | str, title: str = "", best_epoch: int | None = None) -> None:
    h = pd.read_csv(history_csv)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    if h.empty:
        for ax in (ax_loss, ax_acc):
            ax.text(0.5, 0.5, "no finished epoch", ha="center", va="center", transform=ax.transAxes)
    else:
        ax_loss.plot(h["epoch"], h["train_loss"], "o-", ms=3, label="train")
        ax_loss.plot(h["epoch"], h["val_loss"], "o-", ms=3, label="validation")
        ax_acc.plot(h["epoch"], h["train_accuracy"], "o-", ms=3, label="train")
        ax_acc.plot(h["epoch"], h["val_accuracy"], "o-", ms=3, label="validation")
        if best_epoch:
            for ax in (ax_loss, ax_acc):
                ax.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"best epoch {best_epoch}")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if not h.empty:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def confusion(confusion_csv: Path | str, out: Path | str, title: str = "") -> None:
    df = pd.read_csv(confusion_csv, index_col=0)
    cm = df.to_numpy()
    classes = list(df.columns)
    row_sums = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, row_sums, out=np.zeros(cm.shape, dtype=float), where=row_sums > 0)
    fig, ax = plt.subplots(figsize=(6.2, 5.4), dpi=100)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix (test)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


# --- report-level figures: effects, sweeps, Pareto fronts, dataset -------------------------------

def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#5b6476")
    ax.set_xticks([])
    ax.set_yticks([])


def effects(effects_csv: Path | str, out: Path | str) -> None:
    """Forest plot: each augmentation's paired change in test accuracy vs the baseline, with its 95% CI."""
    df = pd.read_csv(effects_csv)
    n = len(df)
    fig, ax = plt.subplots(figsize=(8, max(2.0, 0.42 * n + 1.1)), dpi=100)
    if not n:
        _empty(ax, "no augmentation has a baseline run to compare with")
    else:
        y = np.arange(n)[::-1]
        colors = {"better": "#1d6b2a", "worse": "#b3261e"}
        for yi, (_, r) in zip(y, df.iterrows(), strict=True):
            c = colors.get(r["verdict"], "#3b5998")
            if not np.isnan(r["ci95_low"]):
                ax.plot([r["ci95_low"], r["ci95_high"]], [yi, yi], color=c, lw=2.2, alpha=0.8)
            ax.plot(r["difference_mean"], yi, "o", color=c, ms=6)
        ax.axvline(0, color="grey", lw=1)
        labels = [f"{r.model} [{r.setting}]: {r.augmentation} ({r.pairs} seeds)" for r in df.itertuples()]
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_xlabel(f"change in test accuracy vs '{df['baseline'].iloc[0]}' (percentage points, paired by seed)")
        ax.grid(axis="x", alpha=0.3)
        family = int(df["comparisons"].iloc[0]) if "comparisons" in df else n
        ax.set_title(f"Augmentation effects: mean and unadjusted 95% interval; green/red: better/worse "
                     f"after Holm over {family} comparisons", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def sweep(sweep_csv: Path | str, out: Path | str, title: str = "", log_x: bool | None = None) -> None:
    """Mean test accuracy with 95% CI error bars against the swept setting, one line per group."""
    df = pd.read_csv(sweep_csv)
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=100)
    if df.empty:
        _empty(ax, "no runs in this sweep")
    else:
        x_key = df["x_key"].iloc[0]
        numeric = df["x_numeric"].notna().all()
        categories = list(dict.fromkeys(df["x"]))
        for line, g in df.groupby("line", sort=False):
            xs = g["x_numeric"].to_numpy() if numeric else np.array([categories.index(v) for v in g["x"]])
            mean = g["mean"].to_numpy()
            err = np.vstack([mean - g["ci95_low"].to_numpy(), g["ci95_high"].to_numpy() - mean])
            err = np.nan_to_num(err, nan=0.0)
            ax.errorbar(xs, mean, yerr=err, marker="o", ms=4, capsize=3, label=line)
        if numeric:
            positive = (df["x_numeric"] > 0).all()
            span = df["x_numeric"].max() / df["x_numeric"].min() if positive else 0
            if log_x if log_x is not None else (positive and span >= 10):
                ax.set_xscale("log")
            ax.set_xticks(sorted(set(df["x_numeric"])), [str(v) for v in dict.fromkeys(
                df.sort_values("x_numeric")["x"])], fontsize=8)
            ax.minorticks_off()
        else:
            ax.set_xticks(range(len(categories)), categories, fontsize=8)
        ax.set(xlabel=x_key, ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax.set_title(title or "sweep", fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def pareto(experiments_csv: Path | str, out: Path | str) -> None:
    """Mean test accuracy against parameters and against training time, the Pareto front joined."""
    from fmnist.compare import pareto_front

    df = pd.read_csv(experiments_csv)
    df = df[df["test_accuracy_mean"].notna()] if len(df) else df
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for ax, cost, xlabel in ((axes[0], "params", "parameters"),
                             (axes[1], "train_seconds_mean", "training time per run (s)")):
        if df.empty:
            _empty(ax, "no finished experiment")
            continue
        x = df[cost].astype(float).to_numpy()
        y = 100 * df["test_accuracy_mean"].to_numpy()
        front = np.array(pareto_front(list(x), list(y)))
        ax.scatter(x[~front], y[~front], s=22, color="#9aa5b8", label="dominated")
        order = np.argsort(x[front])
        ax.plot(x[front][order], y[front][order], "o-", color="#c0392b", ms=5, label="Pareto front")
        for xi, yi, name in zip(x[front], y[front], df["experiment"][front], strict=True):
            ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7)
        if (x > 0).all() and x.max() / x.min() >= 10:
            ax.set_xscale("log")
        ax.set(xlabel=xlabel, ylabel="mean test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_title("accuracy vs size", fontsize=10)
    axes[1].set_title("accuracy vs training time", fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def class_distribution(prepared: Path | str, out: Path | str) -> None:
    """Images per class in each split of the prepared file."""
    from fmnist.data import load_prepared

    arrays, meta = load_prepared(prepared)
    classes = meta["classes"]
    fig, ax = plt.subplots(figsize=(9, 3.3), dpi=100)
    width = 0.27
    for k, split in enumerate(("train", "val", "test")):
        counts = np.bincount(arrays[f"{split}_labels"], minlength=len(classes))
        ax.bar(np.arange(len(classes)) + (k - 1) * width, counts, width,
               label=f"{split} ({counts.sum():,})")
    ax.set_xticks(range(len(classes)), classes, rotation=20, fontsize=8)
    ax.set(ylabel="images", title="Class distribution per split")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def tile(images: np.ndarray, pad: int = 2, fill: float = 0.0) -> np.ndarray:
    """One picture of a (rows, cols, H, W) grid of images, `pad` pixels of `fill` between neighbours.

    A figure then draws the whole grid with one `imshow` on one Axes: far faster than an Axes per
    image (matplotlib's cost is per Axes), which is what every run of the report pays for its
    grids. numpy, not torchvision's `make_grid`, so the figure jobs need not import torch.
    """
    rows, cols, h, w = images.shape
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad), fill, dtype=np.result_type(images, fill))
    for r in range(rows):
        for c in range(cols):
            out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = images[r, c]
    return out


def class_samples(prepared: Path | str, out: Path | str, per_class: int = 10, seed: int = 0) -> None:
    """A grid of random training images: one row per class (a class with fewer images leaves blanks)."""
    from fmnist.data import load_prepared

    arrays, meta = load_prepared(prepared)
    classes = meta["classes"]
    images, labels = arrays["train_images"], arrays["train_labels"]
    rng = np.random.default_rng(seed)
    h, w = images.shape[1:]
    grid = np.zeros((len(classes), per_class, h, w), dtype=images.dtype)  # 0: blank in gray_r
    for c in range(len(classes)):
        idx = np.flatnonzero(labels == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        grid[c, : len(pick)] = images[pick]
    pad = 3
    height = len(classes) * 0.75 + 0.4
    fig, ax = plt.subplots(figsize=(per_class * 0.75 + 1.4, height), dpi=100)
    ax.imshow(tile(grid, pad=pad, fill=0), cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([c * (h + pad) + (h - 1) / 2 for c in range(len(classes))], classes, fontsize=8)
    ax.tick_params(axis="y", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title("Training images, one row per class", fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)

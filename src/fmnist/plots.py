"""Figures of one run (learning curves, confusion matrix) and of the study, drawn with matplotlib's Agg
backend and written as palette PNGs (at most 256 colours: a quarter of the bytes of matplotlib's
RGBA PNG, which matters in a report that embeds one figure per run)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import io  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

PALETTE_COLOURS = 128  # enough for anti-aliased lines and a colour map's shades; 256 adds bytes, not detail


def quantized_png(image: Image.Image, colours: int = PALETTE_COLOURS) -> bytes:
    """An image as an optimized palette PNG, transparency flattened on white."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    quantized = image.convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT,
                                              dither=Image.Dither.NONE)
    buf = io.BytesIO()
    quantized.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def save_png(fig, out: Path | str) -> None:
    """Write a figure as a palette PNG (see `quantized_png`) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    buf.seek(0)
    with Image.open(buf) as im:
        Path(out).write_bytes(quantized_png(im))


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
    save_png(fig, out)


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
    save_png(fig, out)


# --- report-level figures: effects, sweeps, Pareto fronts, dataset -------------------------------

def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#5b6476")
    ax.set_xticks([])
    ax.set_yticks([])


def effects(effects_csv: Path | str, out: Path | str) -> None:
    """Forest plot: each augmentation's paired change in test accuracy vs the baseline, with its 95% CI."""
    fig = effects_figure(pd.read_csv(effects_csv))
    save_png(fig, out)


def effects_figure(df: pd.DataFrame):
    """The forest plot as a figure. Its title is the figure's, on two lines from the left edge: over
    the axes alone (which start right of the long row labels) it was clipped at the right."""
    n = len(df)
    fig, ax = plt.subplots(figsize=(8, max(2.2, 0.42 * n + 1.5)), dpi=100, layout="constrained")
    if not n:
        _empty(ax, "no augmentation has a baseline run to compare with")
        return fig
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
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel(f"change in test accuracy vs '{df['baseline'].iloc[0]}' (percentage points, paired by seed)")
    ax.grid(axis="x", alpha=0.3)
    family = int(df["comparisons"].iloc[0]) if "comparisons" in df else n
    fig.suptitle(f"Augmentation effects: mean and unadjusted 95% interval\n"
                 f"green/red: better/worse after Holm's adjustment over {family} comparisons",
                 fontsize=9, x=0.01, ha="left")
    return fig


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
    save_png(fig, out)


def pareto(experiments_csv: Path | str, out: Path | str) -> None:
    """Mean test accuracy against parameters and against training time, the Pareto front joined."""
    fig = pareto_figure(pd.read_csv(experiments_csv))
    save_png(fig, out)


def pareto_figure(df: pd.DataFrame):
    """The two Pareto panels as a figure. Front points carry a number, the same in both panels, and
    a key beside the panels names them: experiment names written at the points overlapped wherever
    experiments lie close (e.g. equal parameter counts); numbers still close are moved apart."""
    from fmnist.compare import pareto_front

    df = df[df["test_accuracy_mean"].notna()].reset_index(drop=True) if len(df) else df
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4), dpi=100, layout="constrained",
                             gridspec_kw={"width_ratios": [1, 1, 0.62]})
    key_ax = axes[2]
    key_ax.axis("off")
    fronts = {}
    for cost in ("params", "train_seconds_mean"):
        if not df.empty:
            fronts[cost] = np.array(pareto_front(list(df[cost].astype(float)), list(100 * df["test_accuracy_mean"])))
    on_front = np.zeros(len(df), dtype=bool)
    for f in fronts.values():
        on_front |= f
    # numbered by accuracy, best first
    order = [i for i in np.argsort(-df["test_accuracy_mean"].to_numpy(), kind="stable") if on_front[i]] if len(df) else []
    number = {int(i): k + 1 for k, i in enumerate(order)}
    points = []
    for ax, cost, xlabel in ((axes[0], "params", "parameters"),
                             (axes[1], "train_seconds_mean", "training time per run (s)")):
        if df.empty:
            _empty(ax, "no finished experiment")
            continue
        x = df[cost].astype(float).to_numpy()
        y = 100 * df["test_accuracy_mean"].to_numpy()
        front = fronts[cost]
        ax.scatter(x[~front], y[~front], s=22, color="#9aa5b8", label="dominated")
        idx = np.flatnonzero(front)[np.argsort(x[front])]
        ax.plot(x[idx], y[idx], "o-", color="#c0392b", ms=5, label="Pareto front")
        if (x > 0).all() and x.max() / x.min() >= 10:
            ax.set_xscale("log")
        ax.set(xlabel=xlabel, ylabel="mean test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        points.append((ax, x[idx], y[idx], [number[int(i)] for i in idx]))
    axes[0].set_title("accuracy vs size", fontsize=10)
    axes[1].set_title("accuracy vs training time", fontsize=10)
    if number:
        key = "\n".join(f"{number[i]:>2d}  {df['experiment'][i]}" for i in order)
        key_ax.text(0.0, 1.0, "Pareto front (either panel)\n" + key, va="top", ha="left", fontsize=8,
                    family="monospace", transform=key_ax.transAxes)
    # numbers last, on the final layout: the key and titles above change where the points land
    fig.canvas.draw()
    fig.set_layout_engine("none")
    for ax, xs, ys, numbers in points:
        _number_points(ax, xs, ys, numbers)
    return fig


def _number_points(ax, xs, ys, numbers, min_gap: float = 11.0) -> None:
    """Write each number beside its point; labels that would touch (in points on the page) move
    down, from the highest point on, until they are `min_gap` apart (up where the axes end), and
    a moved label gets a thin leader line to its point."""
    to_pt = 72.0 / ax.figure.dpi
    px = ax.transData.transform(np.column_stack([xs, ys])) * to_pt
    bottom, top = (ax.get_window_extent().y0 * to_pt + 4, ax.get_window_extent().y1 * to_pt - 10)
    placed: list[tuple[float, float]] = []

    def free(lx: float, ly: float) -> bool:
        return not any(abs(lx - ox) < 18 and abs(ly - oy) < min_gap for ox, oy in placed)

    for k in np.argsort(-px[:, 1], kind="stable"):
        lx, ly0 = px[k, 0] + 5, min(px[k, 1] - 3, top)
        ly = ly0
        while not free(lx, ly) and ly > bottom:
            ly -= min_gap / 2
        if not free(lx, ly) or ly < bottom:
            ly = ly0
            while not free(lx, ly):
                ly += min_gap / 2
        placed.append((lx, ly))
        dy = ly - (px[k, 1] - 3)
        ax.annotate(str(numbers[k]), (xs[k], ys[k]), textcoords="offset points", xytext=(5, -3 + dy), fontsize=8,
                    color="#7a1f16",
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#7a1f16"} if abs(dy) > 1 else None)


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
    save_png(fig, out)


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
    save_png(fig, out)

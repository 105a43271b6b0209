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

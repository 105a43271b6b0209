"""Classification metrics from predictions: confusion matrix, macro precision/recall/F1, per-class accuracy."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int = 10) -> np.ndarray:
    """counts[i, j] = images of true class i predicted as class j."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def summarize(confusion: np.ndarray, class_names: list[str] | None = None) -> dict:
    """Accuracy, macro precision/recall/F1 and per-class accuracy (= recall) of a confusion matrix."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, 0.0)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    names = class_names or [str(i) for i in range(len(cm))]
    total = cm.sum()
    return {
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "per_class_accuracy": {n: float(r) for n, r in zip(names, recall, strict=True)},
    }


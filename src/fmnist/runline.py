"""The one line a finished training job prints to the terminal (and the duration format it shares with
`fmnist status`). Its own module, with no imports, because the train job's script prints it: it is part
of the train rule's code identity (fmnist.codeid), and `fmnist.status`, which is not, reads it from here.
"""

from __future__ import annotations


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def result_line(metrics: dict) -> str:
    """The one line a finished training job prints to the terminal: run, status, test accuracy,
    epochs (run of the budget, the tested one), training time."""
    acc = metrics.get("test_accuracy")
    acc_text = "   n/a" if acc is None else f"{100 * acc:6.2f}%"
    status = "" if metrics["status"] == "ok" else f"  [{metrics['status']}]"
    resumed = metrics.get("resumed_from_epoch")
    resumed_text = "" if resumed is None else f"  resumed after epoch {resumed}"
    return (f"fmnist: finished {metrics['run_id']}  test accuracy {acc_text}  "
            f"epochs {metrics['epochs_run']}/{metrics['epochs_max']} (tested {metrics.get('tested_epoch')})  "
            f"{format_duration(metrics['train_seconds'])}{resumed_text}{status}")

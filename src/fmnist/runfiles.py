"""A run folder's layout: the files a training run writes, written (and, for its job log's header, parsed)
here alone.

A run folder (results/runs/<run id>/, or a pack's staging folder) holds its outputs, `RUN_OUTPUTS`,
with metrics.json written last and recording the SHA-256 of the other three (fmnist.integrity checks
them), and, while the run trains, its resume state. A job's log starts each attempt with a header line
that `fmnist status` reads back to tell the last attempt apart.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from fmnist.files import atomic_write_bytes, sha256_file

METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
CONFUSION_FILE = "confusion.csv"
MODEL_FILE = "model.pt"
RESUME_FILE = "resume.pt"
"""The run's full state after its last finished epoch; removed when the run finishes."""
RUN_OUTPUTS = (METRICS_FILE, HISTORY_FILE, CONFUSION_FILE, MODEL_FILE)
HASHED_FILES = (HISTORY_FILE, CONFUSION_FILE, MODEL_FILE)
"""The outputs whose SHA-256 metrics.json records (its `files`)."""
HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
]
"""history.csv's header: one row per finished epoch."""


def write_history(path: Path, history: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, HISTORY_COLUMNS)
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, path)


def write_confusion(path: Path, cm: Sequence[Sequence[int]], classes: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, cm, strict=True):
            w.writerow([name, *map(int, row)])
    os.replace(tmp, path)


def write_metrics(out_dir: Path, record: dict) -> dict:
    """Write metrics.json, last of a run's files: `record` with the SHA-256 of each file in HASHED_FILES
    added as its `files` (so a later reader tells a damaged or foreign copy apart). Returns the record."""
    record["files"] = {name: sha256_file(out_dir / name) for name in HASHED_FILES}
    atomic_write_bytes(out_dir / METRICS_FILE, json.dumps(record, indent=2, allow_nan=False).encode())
    return record


_HEADER_TIME = "%Y-%m-%d %H:%M:%S"
_HEADER = re.compile(r"^==== (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) job started \(pid (\d+)\) ====$")


def job_header() -> str:
    """The line that starts each attempt of a job in its log: the local time and this process's id."""
    return f"==== {time.strftime(_HEADER_TIME)} job started (pid {os.getpid()}) ===="


def job_started(line: str) -> float | None:
    """The start (epoch seconds) of the attempt whose header `line` is; None for any other line."""
    m = _HEADER.match(line)
    return None if m is None else time.mktime(time.strptime(m.group(1), _HEADER_TIME))

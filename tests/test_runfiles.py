"""A run folder's layout (fmnist.runfiles): what the trainer writes is what the checks and the status
screen read back."""

from __future__ import annotations

import json
import time

import pytest
import torch

from fmnist import integrity, runfiles
from fmnist.errors import DamagedFileError

CLASSES = ["a", "b", "c"]


def write_run(run_dir, run_id="m.none.default.s0"):
    """A run folder written by the trainer's writers: two epochs, a 3-class confusion matrix, a model."""
    run_dir.mkdir(parents=True)
    history = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5, "val_loss": 0.9 / e,
                "val_accuracy": 0.6, "lr": 0.1, "seconds": 1.5} for e in (1, 2)]
    counts = [[3, 1, 0], [0, 4, 0], [1, 0, 2]]
    runfiles.write_history(run_dir / runfiles.HISTORY_FILE, history)
    runfiles.write_confusion(run_dir / runfiles.CONFUSION_FILE, counts, CLASSES)
    torch.save({"w": torch.ones(2)}, run_dir / runfiles.MODEL_FILE)
    record = {"run_id": run_id, "status": "ok", "test_accuracy": 0.8, "epochs_run": 2,
              "best_val_loss": 0.45, "confusion_matrix": {"classes": CLASSES, "counts": counts}, "config": {}}
    return runfiles.write_metrics(run_dir, record)


def test_the_writers_make_a_folder_the_checks_accept(tmp_path):
    run_dir = tmp_path / "m.none.default.s0"
    record = write_run(run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(runfiles.RUN_OUTPUTS)
    assert set(record["files"]) == {runfiles.HISTORY_FILE, runfiles.CONFUSION_FILE, runfiles.MODEL_FILE}
    assert json.loads((run_dir / runfiles.METRICS_FILE).read_text()) == record
    assert integrity.check_run(run_dir) == record
    header = (run_dir / runfiles.HISTORY_FILE).read_text().splitlines()[0]
    assert header.split(",") == runfiles.HISTORY_COLUMNS


@pytest.mark.parametrize("name", [runfiles.HISTORY_FILE, runfiles.CONFUSION_FILE, runfiles.MODEL_FILE])
def test_each_hashed_file_is_checked_against_the_record(tmp_path, name):
    run_dir = tmp_path / "m.none.default.s0"
    write_run(run_dir)
    path = run_dir / name
    if name == runfiles.MODEL_FILE:
        torch.save({"w": torch.zeros(2)}, path)  # loads fine: only the recorded hash tells
    else:
        path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n"))  # the same rows, other line ends
    with pytest.raises(DamagedFileError, match=rf"{name}: its SHA-256 is not the one metrics.json recorded"):
        integrity.check_run(run_dir)


def test_the_job_header_is_read_back():
    before = time.time()
    line = runfiles.job_header()
    started = runfiles.job_started(line)
    assert started is not None and before - 1 <= started <= time.time() + 1  # to the second
    assert f"(pid {__import__('os').getpid()})" in line
    for other in ("", "epoch 1/3 train_loss 0.5", line + " ", "x" + line):
        assert runfiles.job_started(other) is None, other

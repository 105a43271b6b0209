"""A finished run back in Python, and its test metrics computed again from its saved weights.

    fmnist evaluate RUN                  # RUN: a run folder, or a run id under results/runs
    model = fmnist.evaluate.load_model("results/runs/standard_cnn.none.default.s0")

A run folder holds `model.pt` (the tested weights' state_dict) and `metrics.json`, whose `config` is
the run's resolved config: the model is rebuilt from it (a preset, or the user's own class), and the
weights loaded with `torch.load(..., weights_only=True)` (tensors only: a planted file runs no code).
`evaluate_run` then tests it as the trainer did, on the test split of the prepared data: the run's
normalisation, channels_last, `amp_resolved` and evaluation batch size, the trainer's own
`evaluate`. On the device kind the run trained on, the accuracy and confusion matrix equal
metrics.json's exactly and the loss to float rounding; elsewhere (a GPU run evaluated on a CPU) they
may differ by a few images.

The model takes normalised images: a float tensor (N, 1, 28, 28) of (pixel / 255 - mean) / std,
with mean and std from the run's config, `train.normalize` (`LoadedRun.normalize` does it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist.config import ConfigError
from fmnist.files import sha256_file
from fmnist.runfiles import METRICS_FILE, MODEL_FILE

RUNS_DIR = Path("results") / "runs"
DEFAULT_DATA = Path("data") / "prepared" / "fashion_mnist.npz"
DATA_KEYS = ("val_fraction", "split_seed", "train_limit", "test_limit")
LOSS_TOLERANCE = 1e-6  # relative; float32 sums in another order stay well inside it


class EvaluateError(ConfigError):
    """A run that cannot be evaluated; the message names the problem and the fix."""


def find_run(run: str | Path, runs_dir: Path | str = RUNS_DIR) -> Path:
    """A run folder from a path or a run id (looked up under `runs_dir`)."""
    for candidate in (Path(run), Path(runs_dir) / str(run)):
        if (candidate / METRICS_FILE).is_file():
            return candidate
    raise EvaluateError(
        f"no finished run {str(run)!r}: neither {str(run)!r} nor {str(Path(runs_dir) / str(run))!r} holds a "
        "metrics.json. Name a run folder, or a run id under results/runs (`ls results/runs`)."
    )


def read_metrics(run_dir: Path) -> dict:
    try:
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
        metrics["config"]["model"]["arch"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EvaluateError(
            f"{str(run_dir / 'metrics.json')!r} is not a finished run's metrics ({exc}); retrain the run"
        ) from None
    return metrics


@dataclass
class LoadedRun:
    model: Any
    """The trained nn.Module, in eval mode, on `device`."""
    metrics: dict
    run_dir: Path
    device: Any

    @property
    def config(self) -> dict:
        return self.metrics["config"]

    def normalize(self, images):
        """Images (N, 28, 28) or (N, 1, 28, 28), uint8 pixels or floats in [0, 1] -> the model's input,
        as the trainer made it."""
        from fmnist.runtime import Normalizer, to_unit

        t = self.config["train"]
        norm = Normalizer(t["normalize"]["mean"], t["normalize"]["std"], t["channels_last"])
        images = images.to(self.device)
        return norm(to_unit(images.unsqueeze(1) if images.dim() == 3 else images))


def load_run(run: str | Path, device: str = "cpu", runs_dir: Path | str = RUNS_DIR) -> LoadedRun:
    """A finished run's model rebuilt from its resolved config with its saved weights, in eval mode."""
    import torch

    from fmnist import models
    from fmnist.runtime import select_device

    run_dir = find_run(run, runs_dir)
    metrics = read_metrics(run_dir)
    path = run_dir / MODEL_FILE
    if not path.is_file():
        raise EvaluateError(f"run {str(run_dir)!r} has no model.pt; retrain it")
    recorded = (metrics.get("files") or {}).get(MODEL_FILE)
    if recorded and sha256_file(path) != recorded:
        raise EvaluateError(
            f"{str(path)!r} is not the file its metrics.json records (SHA-256 differs): it was damaged or "
            "replaced. Retrain the run (snakemake reruns it when its files are damaged)."
        )
    cfg = metrics["config"]
    m, t = cfg["model"], cfg["train"]
    args = dict(m["args"])
    if m["arch"] in models.TRANSFER_WEIGHTS:  # the saved state holds every weight: no download needed
        args.update(pretrained=False, weights_path=None)
    dev = select_device(device)
    model = models.build_model(m["arch"], args, num_classes=len(metrics["confusion_matrix"]["classes"]))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model = model.to(dev)
    if t["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    return LoadedRun(model.eval(), metrics, run_dir, dev)


def load_model(run: str | Path, device: str = "cpu", runs_dir: Path | str = RUNS_DIR):
    """The trained nn.Module of a finished run (a run folder or a run id), in eval mode. It takes
    normalised images: see `load_run(...).normalize`."""
    return load_run(run, device, runs_dir).model


def evaluate_run(run: str | Path, data_path: Path | str = DEFAULT_DATA, device: str = "cpu",
                 runs_dir: Path | str = RUNS_DIR) -> dict:
    """Test a finished run's saved model again on the test split of `data_path`, as the trainer did.

    Returns {"run_id", "run_dir", "device", "amp", "n_test", "test_accuracy", "test_loss",
    "confusion_matrix", "recorded": {...metrics.json's}, "equal": bool, "differences": [...]}."""
    import torch

    from fmnist import data
    from fmnist import metrics as fmetrics
    from fmnist.runtime import Batches, Normalizer
    from fmnist.train import evaluate

    loaded = load_run(run, device, runs_dir)
    rec, cfg = loaded.metrics, loaded.config
    t = cfg["train"]
    if rec.get("cached_features"):
        raise EvaluateError(
            f"run {rec['run_id']!r} trained and was tested on cached backbone features; its model.pt is the "
            "whole model, whose numbers on images differ from the cached ones by rounding. Use load_model."
        )
    data_path = Path(data_path)
    if not data_path.is_file():
        raise EvaluateError(
            f"no prepared data at {str(data_path)!r}: run the workflow (or `fmnist download` and "
            "`fmnist prepare`) in this directory, or pass --data PATH"
        )
    arrays, meta = data.load_prepared(data_path)
    wanted = rec.get("data") or {}
    differ = [f"{k} {meta.get(k)!r} (run: {wanted[k]!r})" for k in DATA_KEYS if k in wanted and meta.get(k) != wanted[k]]
    if differ:
        raise EvaluateError(
            f"{str(data_path)!r} is not the data run {rec['run_id']!r} was tested on: {', '.join(differ)}. "
            "Prepare it with the run's data settings (`fmnist prepare` with the run's config), or pass "
            "--data the run's prepared file."
        )
    test = Batches(arrays["test_images"], arrays["test_labels"], loaded.device)
    normalize = Normalizer(t["normalize"]["mean"], t["normalize"]["std"], t["channels_last"])
    use_bf16 = rec.get("amp_resolved") == "bf16"

    def autocast():
        return torch.autocast(loaded.device.type, dtype=torch.bfloat16, enabled=use_bf16)

    loss, acc, pred = evaluate(loaded.model, test, normalize, int(t["eval_batch_size"]), autocast)
    classes = rec["confusion_matrix"]["classes"]
    cm = fmetrics.confusion_matrix(arrays["test_labels"], pred, len(classes)).astype(int).tolist()
    result = {
        "run_id": rec["run_id"],
        "run_dir": str(loaded.run_dir),
        "device": str(loaded.device),
        "amp": "bf16" if use_bf16 else "off",
        "n_test": len(test),
        "test_accuracy": acc,
        "test_loss": loss,
        "confusion_matrix": cm,
        "recorded": {"test_accuracy": rec["test_accuracy"], "test_loss": rec["test_loss"],
                     "n_test": rec.get("n_test"), "device": rec.get("device")},
    }
    differences = []
    if rec.get("n_test") is not None and rec["n_test"] != len(test):
        differences.append(f"n_test {len(test)} != recorded {rec['n_test']}")
    if rec["test_accuracy"] is None or acc != rec["test_accuracy"]:
        differences.append(f"test_accuracy {acc!r} != recorded {rec['test_accuracy']!r}")
    if rec["test_loss"] is None or not math.isclose(loss, rec["test_loss"], rel_tol=LOSS_TOLERANCE, abs_tol=1e-9):
        differences.append(f"test_loss {loss!r} != recorded {rec['test_loss']!r}")
    if cm != rec["confusion_matrix"]["counts"]:
        differences.append("confusion matrix differs from the recorded one")
    result["differences"] = differences
    result["equal"] = not differences
    return result

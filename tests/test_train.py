"""The trainer on a real slice of Fashion-MNIST: outputs, early stopping, divergence recorded as a result."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from fmnist import config, experiments, train


def resolve(study: dict, **cfg) -> dict:
    full = config.validate({**cfg, "studies": {"t": study}})
    runs, _ = experiments.expand(full)
    return next(iter(runs.values()))


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_train_run_writes_every_output(tmp_path, prepared_small):
    run = resolve({"models": ["standard_cnn"]}, defaults={"epochs": 2})
    m = train.train_run(run, prepared_small, tmp_path, device="cpu", log=lambda s: None)
    for name in ("metrics.json", "history.csv", "confusion.csv", "model.pt"):
        assert (tmp_path / name).exists(), name
    assert not (tmp_path / train.RESUME_FILE).exists()
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["test_accuracy"] == m["test_accuracy"]
    assert m["status"] == "ok" and m["epochs_run"] == 2 and m["n_test"] == 1000
    assert 0.6 < m["test_accuracy"] <= 1.0  # 1,800 images, 2 epochs: clearly learning
    assert set(m["per_class_accuracy"]) == {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}
    assert m["params"] == 421642 and m["images_per_second"] > 0 and m["device"] == "cpu"
    assert m["config"] == run and m["versions"]["torch"] == torch.__version__
    with open(tmp_path / "confusion.csv") as fh:
        rows = list(csv.reader(fh))
    counts = [[int(v) for v in r[1:]] for r in rows[1:]]
    assert sum(map(sum, counts)) == 1000
    assert sum(counts[i][i] for i in range(10)) / 1000 == pytest.approx(m["test_accuracy"])
    with open(tmp_path / "history.csv") as fh:
        hist = list(csv.DictReader(fh))
    assert [int(h["epoch"]) for h in hist] == [1, 2]
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert "classifier.4.weight" in state


def test_early_stopping_restores_best_epoch(tmp_path, prepared_small):
    # min_delta so large that no epoch after the first counts as better: stop after patience, keep epoch 1
    run = resolve({"models": ["lenet_like"]},
                  defaults={"epochs": 6, "early_stopping": {"patience": 2, "min_delta": 100.0}})
    m = train.train_run(run, prepared_small, tmp_path, device="cpu", log=lambda s: None)
    assert m["epochs_run"] == 3 and m["best_epoch"] == 1


def test_divergence_is_recorded_not_raised(tmp_path, prepared_small):
    run = resolve({"models": ["standard_cnn"], "settings": ["boom"]},
                  settings={"boom": {"optimizer": {"name": "sgd", "lr": 1000.0}}}, defaults={"epochs": 3})
    lines = []
    m = train.train_run(run, prepared_small, tmp_path, device="cpu", log=lines.append)
    assert m["status"] == "diverged" and "training loss" in m["status_reason"]
    assert m["test_accuracy"] is None
    assert (tmp_path / "model.pt").exists() and (tmp_path / "confusion.csv").exists()
    assert any("diverged" in line for line in lines)
    json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: no NaN


def test_mixup_train_accuracy_is_marked(tmp_path, prepared_small):
    run = resolve({"models": ["standard_cnn"], "augmentations": ["mixup"]}, defaults={"epochs": 1})
    m = train.train_run(run, prepared_small, tmp_path, device="cpu", log=lambda s: None)
    assert "primary label" in m["train_accuracy_note"]


def test_unavailable_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")  # the error only exists where CUDA is missing
    with pytest.raises(RuntimeError, match="CUDA is not available.*device: auto"):
        train.select_device("cuda")

"""The trainer on a real slice of Fashion-MNIST: outputs, early stopping, divergence recorded as a result."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import resolve_run

from fmnist import config, runfiles, train


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_train_run_writes_every_output(tmp_path, prepared_small):
    run = resolve_run({"models": ["standard_cnn"]}, defaults={"epochs": 2})
    m = train.train_run(run, prepared_small, tmp_path, device="cpu", log=lambda s: None)
    for name in ("metrics.json", "history.csv", "confusion.csv", "model.pt"):
        assert (tmp_path / name).exists(), name
    assert not (tmp_path / runfiles.RESUME_FILE).exists()
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
    run = resolve_run({"models": ["lenet_like"]},
                  defaults={"epochs": 6, "early_stopping": {"patience": 2, "min_delta": 100.0}})
    m = train.train_run(run, prepared_small, tmp_path, device="cpu", log=lambda s: None)
    assert m["epochs_run"] == 3 and m["best_epoch"] == 1


def test_divergence_is_recorded_not_raised(tmp_path, prepared_small):
    run = resolve_run({"models": ["standard_cnn"], "settings": ["boom"]},
                  settings={"boom": {"optimizer": {"name": "sgd", "lr": 1000.0}}}, defaults={"epochs": 3})
    lines = []
    m = train.train_run(run, prepared_small, tmp_path, device="cpu", log=lines.append)
    assert m["status"] == "diverged" and "training loss" in m["status_reason"]
    assert m["test_accuracy"] is None
    assert (tmp_path / "model.pt").exists() and (tmp_path / "confusion.csv").exists()
    assert any("diverged" in line for line in lines)
    json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: no NaN


def test_mixup_train_accuracy_is_marked(tmp_path, prepared_small):
    run = resolve_run({"models": ["standard_cnn"], "augmentations": ["mixup"]}, defaults={"epochs": 1})
    m = train.train_run(run, prepared_small, tmp_path, device="cpu", log=lambda s: None)
    assert "primary label" in m["train_accuracy_note"]


def test_unavailable_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")  # the error only exists where CUDA is missing
    with pytest.raises(RuntimeError, match="CUDA is not available.*device: auto"):
        train.select_device("cuda")


# --- the stop rule as a unit -------------------------------------------------------------------------

def stop_rule(**es) -> train.StopRule:
    return train.StopRule({"enabled": True, "monitor": "val_loss", "patience": 2, "min_delta": 0.0, **es})


def run_rule(rule: train.StopRule, scores: list[float]) -> tuple[int, int]:
    """(epochs trained, best epoch) of a run whose epochs score `scores`, asked as train_run asks."""
    best, best_epoch, bad = None, 0, 0
    for epoch, score in enumerate(scores, 1):
        if rule.should_stop(bad):
            return epoch - 1, best_epoch
        improved, bad = rule.observe(score, best, bad)
        if improved:
            best, best_epoch = score, epoch
    return len(scores), best_epoch


@pytest.mark.parametrize(("es", "scores", "expected"), [
    # consecutive patience: two non-improving epochs in a row stop the run
    ({}, [0.5, 0.4, 0.45, 0.46, 0.3], (4, 2)),
    # a reset on improvement: 0.35 at epoch 4 restarts the count, so the run goes on to epoch 6
    ({}, [0.5, 0.4, 0.45, 0.35, 0.36, 0.37, 0.2], (6, 4)),
    # patience 0 behaves as 1: the first non-improving epoch stops the run
    ({"patience": 0}, [0.5, 0.4, 0.41, 0.3], (3, 2)),
    # min_delta: a gain of 0.005 is no improvement at min_delta 0.01
    ({"min_delta": 0.01}, [0.5, 0.495, 0.493, 0.2], (3, 1)),
    # an equal score is no improvement
    ({"patience": 1}, [0.5, 0.5, 0.1], (2, 1)),
    # on accuracy, higher is better
    ({"monitor": "val_accuracy", "patience": 1}, [0.80, 0.85, 0.84, 0.9], (3, 2)),
    ({"monitor": "val_accuracy", "patience": 2}, [0.80, 0.79, 0.85, 0.84, 0.83, 0.9], (5, 3)),
    # disabled: the whole budget, best still tracked
    ({"enabled": False, "patience": 1}, [0.5, 0.6, 0.7, 0.4], (4, 4)),
])
def test_stop_rule(es, scores, expected):
    assert run_rule(stop_rule(**es), scores) == expected


SCRIPTED_VAL_ACCURACY = [0.50, 0.40, 0.60, 0.55, 0.50, 0.70, 0.71, 0.72]


def test_trainer_stops_by_the_rule_on_scripted_validation_scores(tmp_path, prepared_small, monkeypatch):
    """The real trainer, its validation scores scripted: 0.60 at epoch 3 improves on epoch 1 and resets the
    count, so patience 2 stops it after epoch 5 (not 4, as a counter that never resets would) and it
    tests epoch 3's weights."""
    run = resolve_run({"models": ["lenet_like"]},
                  defaults={"epochs": 8, "train_fraction": 0.25,
                            "early_stopping": {"patience": 2, "monitor": "val_accuracy"}})
    real, scripted = train.RunSetup.evaluate, iter(SCRIPTED_VAL_ACCURACY)

    def evaluate(self, split):
        loss, acc, pred = real(self, split)
        return (loss, next(scripted), pred) if split is self.val else (loss, acc, pred)

    monkeypatch.setattr(train.RunSetup, "evaluate", evaluate)
    m = train.train_run(run, prepared_small, tmp_path, device="cpu", log=lambda s: None)
    assert (m["epochs_run"], m["best_epoch"], m["tested_epoch"]) == (5, 3, 3)
    assert m["best_val_accuracy"] == 0.60


# --- numerics and CUDA graphs ------------------------------------------------------------------------

def test_metrics_record_the_resolved_amp(tmp_path, prepared_small, monkeypatch):
    from fmnist import amp

    monkeypatch.setattr(amp, "cpu_has_native_bf16", lambda: True)
    run = resolve_run({"models": ["standard_cnn"]}, data={"train_limit": 1000},
                  defaults={"epochs": 1, "early_stopping": {"enabled": False}})
    result = train.train_run(run, prepared_small, tmp_path / "out", device="cpu", log=lambda _m: None, max_steps=2)
    assert run["train"]["amp"] == "auto" and result["amp_resolved"] == "bf16"


def test_cuda_graph_off_cuda_is_a_config_error():
    run = resolve_run({"models": ["standard_cnn"]}, defaults={"cuda_graph": True})
    with pytest.raises(config.ConfigError, match="cuda_graph: true needs a CUDA device.*cuda_graph: false"):
        train.StepLoop.build(run, 10, 256, torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("recipe", [{}, {"optimizer": {"name": "adamw", "lr": 0.002, "weight_decay": 0.01},
                                         "scheduler": {"name": "onecycle"}}])
def test_cuda_graph_matches_eager_on_the_same_seed(prepared_small, recipe):
    """Graphed steps (after the eager warm-up ones) give the losses and weights of eager steps, within
    bf16 autocast's tolerance."""
    from fmnist import data

    arrays, _ = data.load_prepared(prepared_small)
    dev = torch.device("cuda")
    out = {}
    for graphed in (False, True):
        # no dropout: its masks would be drawn from differently advanced RNG streams
        run = resolve_run({"models": ["standard_cnn"]},
                      defaults={"cuda_graph": graphed, "amp": "bf16", "dropout": 0.0, **recipe})
        split = train.Batches(arrays["train_images"], arrays["train_labels"], dev)
        torch.manual_seed(0)
        loop = train.StepLoop.build(run, 10, len(split), dev)
        losses = []
        for step in range(12):
            idx = torch.arange(step * 64, (step + 1) * 64, device=dev)
            losses.append(float(loop.step(split.images[idx], split.labels[idx])[0]))
        weights = torch.cat([p.detach().float().flatten() for p in loop.model.parameters()])
        out[graphed] = losses, weights, loop.graph
    assert out[True][2] is not None and out[True][2].graph is not None  # the graph was captured and replayed
    assert out[True][0] == pytest.approx(out[False][0], rel=2e-2, abs=2e-2)
    assert torch.allclose(out[True][1], out[False][1], rtol=5e-2, atol=5e-3)


@pytest.mark.parametrize("scheduler", [{"name": "none"}, {"name": "step", "step_size": 1}, {"name": "cosine"},
                                       {"name": "onecycle"}, {"name": "plateau", "patience": 0},
                                       {"name": "warmup", "warmup_epochs": 1}, {"name": "warmup_cosine"}])
def test_a_graph_ready_optimizer_follows_every_schedule(scheduler):
    """Under cuda_graph the lr is a tensor the graph reads: each scheduler must fill it in place with the
    values it gives a plain float lr (checked on the CPU, where the graph itself cannot run)."""
    from fmnist import recipes

    lrs = {}
    for tensor_lr in (False, True):
        model = torch.nn.Linear(4, 2)
        opt = recipes.build_optimizer(model.parameters(), {"name": "adam", "lr": 0.01})
        if tensor_lr:
            train.graph_ready(opt, torch.device("cpu"))
            lr_tensor = opt.param_groups[0]["lr"]
        defaults = {"step_size": 10, "gamma": 0.5, "patience": 2, "warmup_epochs": 1, "max_lr_factor": 10.0,
                    "min_lr": 0.0}
        sched = recipes.build_schedule(opt, {**defaults, **scheduler}, 3, 4)
        seen = []
        for _epoch in range(3):
            for _ in range(4):
                opt.step()
                sched.after_batch()
                seen.append(float(opt.param_groups[0]["lr"]))
            sched.after_epoch(1.0)  # a flat val loss: plateau decays
            seen.append(float(opt.param_groups[0]["lr"]))
        if tensor_lr:
            assert opt.param_groups[0]["lr"] is lr_tensor  # filled in place: what a captured graph reads
        lrs[tensor_lr] = seen
    assert lrs[True] == pytest.approx(lrs[False], rel=1e-6)
    if scheduler["name"] != "none":
        assert len(set(lrs[False])) > 1  # the schedule moved the lr, so the comparison is not of constants

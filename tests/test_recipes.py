"""Training recipes through the real trainer on a few hundred real images: every augmentation, loss,
optimizer and schedule, EMA, early stopping with best-weights restore, unaugmented evaluation, determinism."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from fmnist import augment, experiments, train
from fmnist import config as fconfig

TIMING_KEYS = {"train_seconds", "images_per_second", "peak_memory_mb", "device_name", "provenance"}


def tiny_run(setting: dict | None = None, aug: str = "none", augmentations: dict | None = None,
             model: str = "standard_cnn", seed: int = 0) -> dict:
    """A resolved run: ~270 training images (15% of the 1,800 of prepared_small), 1 epoch unless set.
    float32 pinned: these tests re-evaluate weights in float32 and compare exactly, and `amp: auto`
    would train in bf16 on a CPU with native bf16 (which CPU runs the tests changes)."""
    cfg = fconfig.validate({
        "defaults": {"epochs": 1, "batch_size": 64, "train_fraction": 0.15, "eval_batch_size": 500, "amp": "off"},
        "augmentations": augmentations or {},
        "settings": {"s": setting or {}},
        "studies": {"t": {"models": [model], "augmentations": [aug], "settings": ["s"], "seeds": [seed]}},
    })
    runs, _ = experiments.expand(cfg)
    return next(iter(runs.values()))


def train_tiny(run: dict, prepared, out) -> tuple[dict, pd.DataFrame]:
    metrics = train.train_run(run, prepared, out, device="cpu", threads=1, log=lambda _m: None)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    return metrics, pd.read_csv(out / "history.csv")


@pytest.mark.parametrize("kind", sorted(augment.KINDS))
def test_every_augmentation_trains_through_the_trainer(kind, prepared_small, tmp_path):
    m, h = train_tiny(tiny_run(aug=kind), prepared_small, tmp_path)
    assert m["status"] in ("ok", "not_learned") and m["epochs_run"] == 1
    assert h["train_loss"].notna().all() and 0 <= m["test_accuracy"] <= 1
    mixes = augment.build_augmentation(kind).mixes_labels
    assert m["train_accuracy_vs_primary_label"] is mixes
    assert bool(m["train_accuracy_note"]) is mixes


@pytest.mark.parametrize("optimizer", [
    {"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    {"name": "sgd", "lr": 0.01, "momentum": 0.0},
    {"name": "adam", "lr": 0.001, "weight_decay": 1e-4},
    {"name": "adamw", "lr": 0.001, "weight_decay": 0.05},
    {"name": "adagrad", "lr": 0.01},
    {"name": "rmsprop", "lr": 0.001, "momentum": 0.9},
], ids=lambda o: f"{o['name']}-m{o.get('momentum', '')}")
def test_each_optimizer_steps(optimizer, prepared_small, tmp_path):
    run = tiny_run({"optimizer": optimizer})
    torch.manual_seed(run["seed"])
    from fmnist.models import build_model

    initial = build_model(run["model"]["arch"], run["model"]["args"]).state_dict()
    m, _ = train_tiny(run, prepared_small, tmp_path)
    assert m["status"] in ("ok", "not_learned"), m["status_reason"]  # 5 plain-SGD steps may learn nothing yet
    final = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in final.values())
    assert any(not torch.equal(initial[k], final[k]) for k in initial)  # the weights moved


BASE_LR = 0.01


@pytest.mark.parametrize("scheduler,expected_lrs", [
    ({"name": "none"}, [BASE_LR, BASE_LR]),
    ({"name": "step", "step_size": 1, "gamma": 0.5}, [BASE_LR, BASE_LR / 2]),
    ({"name": "cosine"}, [BASE_LR, BASE_LR / 2]),  # T_max = 2 epochs: half way after one
    ({"name": "plateau", "patience": 0, "gamma": 0.5}, None),
    ({"name": "onecycle", "max_lr_factor": 10.0}, None),
    ({"name": "warmup", "warmup_epochs": 1}, [BASE_LR, BASE_LR]),
    ({"name": "warmup_cosine", "warmup_epochs": 1}, None),
], ids=lambda s: s["name"] if isinstance(s, dict) else "")
def test_each_schedule_steps(scheduler, expected_lrs, prepared_small, tmp_path):
    setting = {"epochs": 2, "optimizer": {"name": "sgd", "lr": BASE_LR, "momentum": 0.9},
               "scheduler": scheduler, "early_stopping": {"enabled": False}}
    m, h = train_tiny(tiny_run(setting), prepared_small, tmp_path)
    assert m["status"] == "ok" and m["epochs_run"] == 2
    lrs = h["lr"].tolist()  # the lr in force at the end of each epoch
    if expected_lrs is not None:
        assert lrs == pytest.approx(expected_lrs)
    elif scheduler["name"] == "onecycle":
        assert lrs[0] > BASE_LR and lrs[1] < lrs[0]  # rose towards 10x, then annealed to near zero
    elif scheduler["name"] == "warmup_cosine":
        assert lrs[0] == pytest.approx(BASE_LR) and lrs[1] < 1e-6  # end of warm-up, end of cosine
    elif scheduler["name"] == "plateau":
        assert lrs[0] == pytest.approx(BASE_LR)


def test_warmup_rises_linearly_within_the_warmup():
    from fmnist import recipes

    model = torch.nn.Linear(2, 2)
    opt = recipes.build_optimizer(model.parameters(), {"name": "sgd", "lr": 1.0})
    sched = recipes.build_schedule(opt, {"name": "warmup", "warmup_epochs": 2}, epochs=5, steps_per_epoch=2)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.after_batch()
    assert seen == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("loss,aug", [
    ({"name": "cross_entropy", "label_smoothing": 0.1}, "none"),
    ({"name": "cross_entropy", "label_smoothing": 0.1}, "mixup"),
    ({"name": "bce"}, "none"),
    ({"name": "bce"}, "mixup"),
])
def test_losses_train_on_hard_and_mixed_targets(loss, aug, prepared_small, tmp_path):
    m, h = train_tiny(tiny_run({"loss": loss}, aug=aug), prepared_small, tmp_path)
    assert m["status"] in ("ok", "not_learned") and h["train_loss"].iloc[0] > 0  # BCE learns slowly in 5 steps


def test_loss_values_match_their_definitions():
    from fmnist import recipes

    logits = torch.randn(5, 10)
    y = torch.tensor([0, 3, 9, 2, 2])
    soft = 0.7 * torch.nn.functional.one_hot(y, 10) + 0.3 * torch.nn.functional.one_hot(y.roll(1), 10)
    ce = recipes.build_loss({"name": "cross_entropy"})
    torch.testing.assert_close(ce(logits, y), ce(logits, torch.nn.functional.one_hot(y, 10).float()))
    torch.testing.assert_close(ce(logits, soft), -(soft * logits.log_softmax(1)).sum(1).mean())
    bce = recipes.build_loss({"name": "bce"})
    torch.testing.assert_close(bce(logits, soft), torch.nn.functional.binary_cross_entropy_with_logits(logits, soft))
    smooth = recipes.build_loss({"name": "cross_entropy", "label_smoothing": 0.2})
    target = torch.nn.functional.one_hot(y, 10) * 0.8 + 0.02
    torch.testing.assert_close(smooth(logits, y), -(target * logits.log_softmax(1)).sum(1).mean())


def test_ema_weights_are_evaluated_and_saved(prepared_small, tmp_path):
    from fmnist import data
    from fmnist.models import build_model

    setting = {"epochs": 2, "ema": {"enabled": True, "decay": 0.9}, "early_stopping": {"enabled": False}}
    run = tiny_run(setting)
    m, _ = train_tiny(run, prepared_small, tmp_path / "ema")
    assert m["evaluated_with_ema"] is True and m["status"] in ("ok", "not_learned")
    # Same seed without EMA trains the same raw weights; the EMA run saved and tested other (averaged) ones.
    plain, _ = train_tiny(tiny_run({**setting, "ema": {"enabled": False}}), prepared_small, tmp_path / "plain")
    assert plain["evaluated_with_ema"] is False
    ema_w = torch.load(tmp_path / "ema" / "model.pt", weights_only=True)
    plain_w = torch.load(tmp_path / "plain" / "model.pt", weights_only=True)
    assert set(ema_w) == set(plain_w) and any(not torch.equal(ema_w[k], plain_w[k]) for k in ema_w)
    arrays, _ = data.load_prepared(prepared_small)
    model = build_model(run["model"]["arch"], run["model"]["args"])
    model.load_state_dict(ema_w)
    test = train.Batches(arrays["test_images"], arrays["test_labels"], torch.device("cpu"))
    norm = train.Normalizer(run["train"]["normalize"]["mean"], run["train"]["normalize"]["std"], False)
    loss, _, _ = train.evaluate(model, test, norm, 500, lambda: torch.autocast("cpu", enabled=False))
    assert loss == pytest.approx(m["test_loss"]) and loss != pytest.approx(plain["test_loss"])


def test_early_stopping_restores_the_best_weights(prepared_small, tmp_path):
    # min_delta 1.0 on accuracy: epoch 1 is the best there can be, so training stops after patience 1.
    setting = {"epochs": 5, "early_stopping": {"monitor": "val_accuracy", "patience": 1, "min_delta": 1.0}}
    run = tiny_run(setting)
    m, h = train_tiny(run, prepared_small, tmp_path)
    assert m["epochs_run"] == 2 and m["best_epoch"] == 1
    # The saved weights are epoch 1's: they reproduce its validation accuracy.
    from fmnist import data
    from fmnist.models import build_model

    arrays, _ = data.load_prepared(prepared_small)
    model = build_model(run["model"]["arch"], run["model"]["args"])
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    val = train.Batches(arrays["val_images"], arrays["val_labels"], torch.device("cpu"))
    norm = train.Normalizer(run["train"]["normalize"]["mean"], run["train"]["normalize"]["std"], False)
    _, acc, _ = train.evaluate(model, val, norm, 500, lambda: torch.autocast("cpu", enabled=False))
    assert acc == pytest.approx(h["val_accuracy"].iloc[0])


def test_dropout_override_reaches_the_model():
    run = tiny_run({"dropout": 0.25})
    assert run["model"]["args"]["dropout"] == 0.25
    from fmnist.models import build_model

    model = build_model(run["model"]["arch"], run["model"]["args"])
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.25]


def test_train_fraction_keeps_that_share(prepared_small, tmp_path):
    m, _ = train_tiny(tiny_run({"train_fraction": 0.6, "epochs": 1}), prepared_small, tmp_path)
    assert m["n_train"] == pytest.approx(0.6 * 1800, abs=10)


@pytest.mark.parametrize("drop_last", [False, True])
def test_train_figures_are_averaged_over_the_images_the_epoch_used(drop_last, prepared_small, tmp_path):
    """270 images at batch 64: 5 steps see all 270, or 4 steps see 256 with drop_last; an epoch's train
    accuracy is its correct count over the images it saw (so a multiple of 1/270 or 1/256)."""
    m, h = train_tiny(tiny_run({"epochs": 2, "drop_last": drop_last}), prepared_small, tmp_path)
    assert m["n_train"] == 270
    seen = 256 if drop_last else 270
    for acc in h["train_accuracy"]:
        assert 0 < acc <= 1 and acc * seen == pytest.approx(round(acc * seen), abs=1e-6), (acc, seen)


def test_nothing_is_augmented_at_evaluation(prepared_small, tmp_path, monkeypatch):
    """A spy augmentation sees exactly the training images of each step, never a validation or test batch."""
    calls = []

    class Spy(augment.batched.Augmentation):
        def __call__(self, x, y):
            calls.append(len(y))
            return x, y

    monkeypatch.setattr(augment, "build_augmentation", lambda *a, **k: Spy())
    setting = {"epochs": 2, "early_stopping": {"enabled": False}}
    m, _ = train_tiny(tiny_run(setting), prepared_small, tmp_path)
    assert sum(calls) == 2 * m["n_train"] and max(calls) == 64  # training batches only
    assert m["n_val"] == 200 and m["n_test"] == 1000


def test_metrics_carry_every_reported_figure(prepared_small, tmp_path):
    m, _ = train_tiny(tiny_run(aug="cutmix"), prepared_small, tmp_path)
    for key in ("test_accuracy", "test_loss", "precision_macro", "recall_macro", "f1_macro",
                "per_class_accuracy", "confusion_matrix", "best_epoch", "epochs_run", "train_seconds",
                "images_per_second", "peak_memory_mb", "train_accuracy", "train_accuracy_vs_primary_label"):
        assert m[key] is not None, key
    counts = m["confusion_matrix"]["counts"]
    assert sum(map(sum, counts)) == m["n_test"]
    assert sum(counts[i][i] for i in range(10)) / m["n_test"] == pytest.approx(m["test_accuracy"])
    assert m["train_accuracy_vs_primary_label"] is True


def test_same_run_twice_gives_identical_metrics(prepared_small, tmp_path):
    setting = {"epochs": 2, "optimizer": {"name": "sgd", "lr": 0.02, "momentum": 0.9},
               "scheduler": {"name": "cosine"}, "ema": {"enabled": True, "decay": 0.9}}
    run = tiny_run(setting, aug="ra_cm", augmentations={"ra_cm": {"kind": "randaugment", "num_ops": 2}})
    a, _ = train_tiny(run, prepared_small, tmp_path / "a")
    b, _ = train_tiny(run, prepared_small, tmp_path / "b")
    strip = lambda m: {k: v for k, v in m.items() if k not in TIMING_KEYS}  # noqa: E731
    # history.csv holds each epoch's seconds, so only its hash may differ; the weights may not.
    a_files, b_files = a.pop("files"), b.pop("files")
    assert a_files["model.pt"] == b_files["model.pt"] and a_files["confusion.csv"] == b_files["confusion.csv"]
    assert strip(a) == strip(b)
    assert (tmp_path / "a" / "history.csv").read_text().split("\n")[1].split(",")[:6] == \
        (tmp_path / "b" / "history.csv").read_text().split("\n")[1].split(",")[:6]
    c, _ = train_tiny(tiny_run(setting, aug="ra_cm", seed=1,
                               augmentations={"ra_cm": {"kind": "randaugment", "num_ops": 2}}),
                      prepared_small, tmp_path / "c")
    assert c["test_loss"] != a["test_loss"]  # another seed is another run


@pytest.mark.slow
def test_named_augmentation_and_every_recipe_option_run_through_the_workflow(tmp_path):
    """A real Snakemake run: a user-named augmentation and a setting with every recipe option.

    Every augmentation kind runs through the workflow in tests/test_smoke.py (config/full.yaml uses
    each of them); what this adds is a study of the user's own names and a recipe with every option."""
    from conftest import make_workflow, snakemake, tiny_config

    cfg = tiny_config(
        defaults={"epochs": 1, "train_fraction": 0.2},
        augmentations={"ra_light": {"kind": "randaugment", "num_ops": 1, "magnitude": 5}},
        settings={"all_options": {"epochs": 2, "batch_size": 32, "dropout": 0.1, "train_fraction": 0.3,
                                  "optimizer": {"name": "sgd", "lr": 0.02, "momentum": 0.9, "nesterov": True},
                                  "scheduler": {"name": "warmup_cosine", "warmup_epochs": 1},
                                  "loss": {"name": "cross_entropy", "label_smoothing": 0.1},
                                  "ema": {"enabled": True, "decay": 0.9},
                                  "early_stopping": {"monitor": "val_accuracy", "patience": 1, "min_delta": 0.001}}},
        studies={"tiny": {"models": ["standard_cnn"], "augmentations": ["ra_light"], "seeds": [0]},
                 "options": {"models": ["standard_cnn"], "augmentations": ["cutmix_mixup"],
                             "settings": ["all_options"], "seeds": [0]}},
    )
    root = make_workflow(tmp_path / "wf", cfg)
    snakemake(root, "--forceall", "all")
    runs = pd.read_csv(root / "results" / "runs.csv")
    expected = {"standard_cnn.ra_light.default.s0", "standard_cnn.cutmix_mixup.all_options.s0"}
    assert set(runs["run_id"]) == expected
    assert runs["status"].isin(["ok", "not_learned"]).all()
    m = json.loads((root / "results" / "runs" / "standard_cnn.cutmix_mixup.all_options.s0" / "metrics.json").read_text())
    assert m["evaluated_with_ema"] and m["config"]["model"]["args"]["dropout"] == 0.1

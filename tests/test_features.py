"""Head-only transfer on cached backbone features equals the uncached run; the workflow computes each
feature set once and shares it; augmentation on the backbone's input turns the cache off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_workflow, planned_jobs, snakemake, tiny_config

from fmnist import config, experiments, features, runtime, train
from fmnist.errors import DamagedFileError


def small_transfer_run(arch="mobilenet_v3_small", augmentation="none", model_args=None, **train_overrides):
    cfg = tiny_config(
        models={"m": {"arch": arch, "args": {"trainable": "head", "pretrained": False, "image_size": 32,
                                             **(model_args or {})}}},
        defaults={"epochs": 2, "batch_size": 32, "early_stopping": {"enabled": False}, **train_overrides},
    )
    cfg["studies"] = {"s": {"models": ["m"], "augmentations": [augmentation], "seeds": [3]}}
    config.validate(cfg)
    return next(iter(experiments.expand(cfg)[0].values()))


def plain_and_cached(run: dict, prepared: Path, tmp_path: Path) -> tuple[dict, dict]:
    """The run trained twice on CPU, into tmp_path/plain and, on its features computed first, tmp_path/cached."""
    feats = tmp_path / "features.pt"
    features.compute(features.feature_spec(run), prepared, feats, device="cpu", log=lambda _m: None)
    plain = train.train_run(run, prepared, tmp_path / "plain", device="cpu", log=lambda _m: None)
    cached = train.train_run(run, prepared, tmp_path / "cached", device="cpu", log=lambda _m: None,
                             features_path=feats)
    return plain, cached


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", pytest.param("resnet18", marks=pytest.mark.slow)])
def test_cached_head_only_run_equals_the_uncached_one(arch, prepared_small, tmp_path):
    torch.set_num_threads(1)
    # a train subset: the cache must pick the same rows. SGD: Adam's per-element normalisation would turn
    # float-order noise in near-zero gradients into lr-sized weight differences
    run = small_transfer_run(arch, train_fraction=0.5, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})
    assert features.cacheable(run)
    plain, cached = plain_and_cached(run, prepared_small, tmp_path)
    assert cached["cached_features"] and not plain["cached_features"]
    for key in ("test_loss", "best_val_loss"):
        assert cached[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-5), key
    assert abs(cached["test_accuracy"] - plain["test_accuracy"]) <= 1 / 1000  # one image at most
    assert cached["params"] == plain["params"] and cached["trainable_params"] == plain["trainable_params"]
    # model.pt holds the whole network in both, with the same trained head
    a = torch.load(tmp_path / "plain" / "model.pt")
    b = torch.load(tmp_path / "cached" / "model.pt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def feature_file(path, n=(6, 3, 4), dim=5, **changes):
    """A feature file as `compute` writes it (random features), with `changes` applied to its dict."""
    d = {}
    for split, rows in zip(("train", "val", "test"), n, strict=True):
        d[f"{split}_features"] = torch.randn(rows, dim)
        d[f"{split}_labels"] = torch.arange(rows, dtype=torch.int64) % 10
    d["spec"] = {"arch": "resnet18", "args": {"trainable": "head", "weights_path": None},
                 "normalize": {"mean": 0.5, "std": 0.5}, "amp": "off", "channels_last": False}
    d.update(changes)
    runtime.atomic_torch_save({k: v for k, v in d.items() if v is not None}, path)
    return path


class Planted:
    """What a planted feature file could hold: an object whose unpickling runs code (here: touch a file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


def damaged_problem(path, keep=None) -> str:
    with pytest.raises(DamagedFileError) as exc:
        features.load(path, "cpu", keep)
    (where, problem), = exc.value.problems
    assert where == path
    # the fix removes the file and runs the workflow again, which computes the features anew
    assert exc.value.fix.startswith(f"rm -f {path} && snakemake")
    return problem


def test_a_feature_file_loads_as_tensors_only(tmp_path):
    good = features.load(feature_file(tmp_path / "f.pt"), "cpu", keep=[0, 2, 4])
    assert len(good["train"]) == 3 and len(good["val"]) == 3 and len(good["test"]) == 4
    # a file that would run code when unpickled: refused, and the code never ran
    marker = tmp_path / "code-ran"
    planted = feature_file(tmp_path / "planted.pt", spec=Planted(marker))
    assert "not a loadable feature file" in damaged_problem(planted)
    assert not marker.exists()
    torch.load(planted, weights_only=False)  # the test's own check that the plant is real
    assert marker.exists()


def test_a_damaged_feature_file_is_named_with_its_fix(tmp_path, prepared_small):
    path = feature_file(tmp_path / "f.pt")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert "not a loadable feature file" in damaged_problem(path)
    path.write_bytes(b"")
    assert "not a loadable feature file" in damaged_problem(path)
    assert "lacks the tensor(s) val_labels" in damaged_problem(feature_file(path, val_labels=None))
    assert "train split" in damaged_problem(feature_file(path, train_labels=torch.zeros(5, dtype=torch.int64)))
    assert "val split" in damaged_problem(feature_file(path, val_features=torch.zeros(3, 5, dtype=torch.int64)))
    assert "fewer than the run's subset" in damaged_problem(feature_file(path), keep=[0, 6])
    assert "missing" in damaged_problem(tmp_path / "absent.pt")
    # the trainer stops on it with that message (the workflow's scripts print it as one line)
    run = small_transfer_run()
    path.write_bytes(whole[:100])
    with pytest.raises(DamagedFileError, match="not a loadable feature file"):
        train.train_run(run, prepared_small, tmp_path / "run", device="cpu", log=lambda _m: None,
                        features_path=path)


def test_what_the_cache_applies_to():
    assert features.cacheable(small_transfer_run())
    assert not features.cacheable(small_transfer_run(augmentation="flip"))  # changes the backbone input
    assert not features.cacheable(small_transfer_run(ema={"enabled": True}))
    # frozen BatchNorm layers that follow model.train() normalise each batch by its own statistics
    assert not features.cacheable(small_transfer_run(model_args={"frozen_norms": "train"}))
    assert features.cacheable(small_transfer_run(model_args={"frozen_norms": "eval"}))
    # batch size, optimizer and seed are the head's business: same feature set
    a = small_transfer_run(batch_size=8)
    b = small_transfer_run(batch_size=128, optimizer={"name": "sgd", "lr": 0.01})
    assert features.feature_key(a) == features.feature_key(b)
    assert features.feature_key(a) != features.feature_key(small_transfer_run(normalize={"mean": 0.5, "std": 0.5}))


@pytest.mark.slow
def test_workflow_computes_one_feature_set_for_a_batch_size_sweep(tmp_path):
    cfg = tiny_config(
        models={"m": {"arch": "mobilenet_v3_small", "args": {"trainable": "head", "pretrained": False,
                                                            "image_size": 32}}},
        settings={f"bs{b}": {"batch_size": b} for b in (16, 32, 64)},
    )
    cfg["studies"] = {"sweep": {"models": ["m"], "settings": ["bs16", "bs32", "bs64"], "augmentations": ["none", "flip"]}}
    root = make_workflow(tmp_path / "wf", cfg)
    jobs = planned_jobs(root)
    assert jobs["features"] == 1 and jobs["train"] == 6  # 3 cached (none) + 3 with flip on the image
    (root / "off.yaml").write_text(json.dumps({**cfg, "feature_cache": False}))
    assert "features" not in planned_jobs(root, "--configfile", "off.yaml")
    # for real (smoke mode keeps it short; the report's jobs add nothing here): the cached runs say so,
    # the flipped ones trained on images
    snakemake(root, "--config", "smoke=true", "--until", "train")
    done = sorted((root / "smoke" / "results" / "runs").glob("*/metrics.json"))
    assert len(done) == 6, done
    for path in done:
        m = json.loads(path.read_text())
        assert m["status"] in ("ok", "not_learned")
        assert m["cached_features"] == (m["augmentation"] == "none"), path.parent.name
    assert len(list((root / "smoke" / "results" / "features").glob("*.pt"))) == 1


def test_plan_costs_one_feature_pass_per_set_and_the_heads(monkeypatch, tmp_path):
    from fmnist import plan

    monkeypatch.setenv("FMNIST_CACHE_DIR", str(tmp_path / "cache"))
    cfg = tiny_config(
        models={"m": {"arch": "mobilenet_v3_small", "args": {"trainable": "head", "pretrained": False}}},
        settings={f"bs{b}": {"batch_size": b} for b in (16, 32)},
    )
    cfg["studies"] = {"sweep": {"models": ["m"], "settings": ["bs16", "bs32"]}}
    config.validate(cfg)
    runs = list(experiments.expand(cfg)[0].values())
    label = plan.device_label("cpu", 1)
    cache = {plan.throughput_key(r, label, True): {"train_images_per_s": 50.0, "params": 1,
                                                   "activation_bytes_per_image": 1} for r in runs}
    cache[plan.feature_figure_key(runs[0], label)] = {"feature_images_per_s": 300.0}
    plan.save_cache(cache)
    on, off = plan.plan(cfg, fast=True), plan.plan(cfg, fast=False)
    images = 2000 + 1000  # train + val + test of tiny_config, once for the set
    heads = sum(2 * 1800 + 2 * 200 + 1000 for _ in runs) / features.HEAD_IMAGES_PER_S
    assert on["total_hours"] * 3600 == pytest.approx(images / 300.0 + heads)
    assert len(on["feature_sets"]) == 1
    assert off["total_hours"] * 3600 == pytest.approx(2 * (3600 / 50.0 + 1400 / 150.0))


def test_frozen_norms_train_trains_the_same_with_the_cache_on_or_off(prepared_small, tmp_path):
    """A head-only run whose frozen BatchNorm layers follow model.train() (`frozen_norms: train`, report
    A's and C's head runs) gets no feature file with the cache on (the workflow's own choice,
    `features.run_features_file`), so it trains exactly as with the cache off; features computed in
    eval mode would train another model (the eval-mode run's numbers differ), and handing them to it
    is refused by name. One epoch on a slice."""
    torch.set_num_threads(1)
    run = small_transfer_run(model_args={"frozen_norms": "train"}, epochs=1, train_fraction=0.5)
    results = {}
    for cache in (True, False):
        path = features.run_features_file(run, feature_cache=cache)
        if path is not None:  # as the workflow's features job would: compute the set's file first
            path = tmp_path / path
            features.compute(features.feature_spec(run), prepared_small, path, device="cpu", log=lambda _m: None)
        results[cache] = train.train_run(run, prepared_small, tmp_path / f"cache_{cache}", device="cpu",
                                         log=lambda _m: None, features_path=path)
    on, off = results[True], results[False]
    assert not on["cached_features"] and not off["cached_features"]
    for key in ("test_accuracy", "test_loss", "best_val_loss", "best_val_accuracy"):
        assert on[key] == off[key], key
    # the setting matters: the same run with eval-mode frozen norms (what cached features compute) differs
    evaluated = small_transfer_run(model_args={"frozen_norms": "eval"}, epochs=1, train_fraction=0.5)
    other = train.train_run(evaluated, prepared_small, tmp_path / "eval", device="cpu", log=lambda _m: None)
    assert (other["test_loss"], other["best_val_loss"]) != (off["test_loss"], off["best_val_loss"])
    feats = tmp_path / "eval_features.pt"
    features.compute(features.feature_spec(evaluated), prepared_small, feats, device="cpu", log=lambda _m: None)
    with pytest.raises(ValueError, match="frozen_norms: train"):
        train.train_run(run, prepared_small, tmp_path / "refused", device="cpu", log=lambda _m: None,
                        features_path=feats)


def test_plan_costs_a_frozen_norms_train_head_run_as_a_whole_network(monkeypatch, tmp_path):
    """`fmnist plan` with the cache on shows such a run's true cost: no feature set, the whole
    network's throughput for every epoch, as with the cache off."""
    from fmnist import plan

    monkeypatch.setenv("FMNIST_CACHE_DIR", str(tmp_path / "cache"))
    cfg = tiny_config(
        models={"m": {"arch": "mobilenet_v3_small", "args": {"trainable": "head", "pretrained": False,
                                                            "frozen_norms": "train"}}},
        settings={"bs16": {"batch_size": 16}},
    )
    cfg["studies"] = {"s": {"models": ["m"], "settings": ["bs16"]}}
    config.validate(cfg)
    runs = list(experiments.expand(cfg)[0].values())
    label = plan.device_label("cpu", 1)
    cache = {plan.throughput_key(r, label, fast): {"train_images_per_s": 50.0, "params": 1,
                                                   "activation_bytes_per_image": 1}
             for r in runs for fast in (True, False)}
    cache[plan.feature_figure_key(runs[0], label)] = {"feature_images_per_s": 300.0}
    plan.save_cache(cache)
    on = plan.plan(cfg, fast=True)
    assert on["feature_sets"] == {} or len(on["feature_sets"]) == 0
    assert on["total_hours"] * 3600 == pytest.approx(len(runs) * (3600 / 50.0 + 1400 / 150.0))

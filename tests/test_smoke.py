"""Smoke mode: config/full.yaml runs through the real rules for a few steps on a slice of the real data,
into smoke/, with transfer weights this test makes; the report says so on line one. Every experiment of
full.yaml trains as its smoke job would: a cover of them through Snakemake, the rest in process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path

import pytest
import yaml
from conftest import DATASET_DIR, REPO, make_workflow, snakemake, tiny_config, write_config

from fmnist import augment, config, experiments, features, models, smoke, train


def make_torch_home(home: Path) -> Path:
    """torch hub's cache with a (randomly initialised) checkpoint for every transfer architecture."""
    import torch
    import torchvision

    for arch, (_enum, url) in models.TRANSFER_WEIGHTS.items():
        ckpt = home / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), ckpt)
    return home


def test_smoke_switch_errors_name_the_fix(tmp_path):
    root = make_workflow(tmp_path / "wf", tiny_config())
    proc = snakemake(root, "-n", "--config", "smoke=maybe", check=False)
    assert proc.returncode != 0 and "use --config smoke=true" in proc.stdout + proc.stderr


def augmentation_kinds(run: dict) -> set[str]:
    """The augmentation kinds a resolved run uses: its own, and each step's of a chain."""
    aug = run["augmentation"]
    return {aug["kind"], *(step["kind"] for step in aug.get("params", {}).get("steps", []))}


def test_full_config_uses_every_augmentation_kind():
    """The smoke run below is where every augmentation kind runs through the workflow's rules
    (tests/test_recipes.py relies on it): config/full.yaml must keep using each of them."""
    runs, _ = experiments.expand(config.load(REPO / "config" / "full.yaml"))  # load validates
    kinds = set().union(*(augmentation_kinds(run) for run in runs.values()))
    assert kinds == set(augment.KINDS), f"full.yaml runs no {sorted(set(augment.KINDS) - kinds)}"


def workflow_cover(runs: dict[str, dict]) -> list[str]:
    """A few runs that between them use every model family (the module whose code the train rule's
    code identity hashes), input size, partly frozen network, augmentation kind, cached-feature choice
    and recipe option (optimizer, scheduler, loss, label smoothing, EMA, early stopping, train
    fraction, dropout) of `runs`: what the rules' code (resources, feature inputs, code identity,
    plots, aggregation, report) can tell apart. Each architecture trains as its job would in
    test_every_experiment_of_full_yaml_trains_in_smoke_mode. Greedy set cover, in the runs' order, so
    the choice is deterministic."""

    def traits(run: dict) -> set:
        t = run["train"]
        args = run["model"].get("args", {})
        return {
            ("family", models.get_preset(run["model"]["arch"]).module),
            ("resized", bool(args.get("resize"))),
            ("partly frozen", args.get("trainable", "all") != "all"),
            *(("augmentation", k) for k in augmentation_kinds(run)),
            ("cached_features", features.cacheable(run)),
            ("optimizer", t["optimizer"]["name"]),
            ("scheduler", t["scheduler"]["name"]),
            ("loss", t["loss"]["name"]),
            ("label_smoothing", t["loss"]["label_smoothing"] > 0),
            ("ema", t["ema"]["enabled"]),
            ("early_stopping", t["early_stopping"]["enabled"]),
            ("part_of_the_data", t["train_fraction"] < 1),
            ("dropout", t["dropout"] is not None),
        }

    traits_of = {rid: traits(run) for rid, run in runs.items()}
    need = set().union(*traits_of.values())
    chosen: list[str] = []
    while need:
        best = max(traits_of, key=lambda rid: len(traits_of[rid] & need))  # first of the best: stable
        chosen.append(best)
        need -= traits_of[best]
    return chosen


def full_config() -> dict:
    """config/full.yaml with this machine's data and CPU; everything else as it is."""
    full = yaml.safe_load((REPO / "config" / "full.yaml").read_text())
    full["data"] = {**full.get("data", {}), "sources": [str(DATASET_DIR)]}
    full.update(device="cpu", threads=1)
    return full


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    """The smoke run of config/full.yaml's cover (workflow_cover) through the real workflow, once.

    Every job of full.yaml spends almost all of its few seconds importing torch; the cover keeps every
    rule's code path (each architecture, augmentation kind, recipe option, cached features) in the
    Snakemake run, and test_every_experiment_of_full_yaml_trains_in_smoke_mode trains the other
    experiments as the train job would, in one process."""
    tmp = tmp_path_factory.mktemp("smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(make_torch_home(tmp / "torch")))
        root = make_workflow(tmp / "wf")
        write_config(root, full_config())
        expected = config.load(root / "test.yaml")  # validated, schema defaults filled in
        smoke.configure(expected)
        all_runs = {rid: smoke.shrink_run(run) for rid, run in experiments.expand(expected)[0].items()}
        cover = workflow_cover(all_runs)
        cover_cfg = full_config()
        cover_cfg["studies"] = {}
        for i, rid in enumerate(cover):
            model, aug, setting, _seed = rid.split(".")
            cover_cfg["studies"][f"cover_{i}"] = {
                "description": f"smoke cover: {model}.{aug}.{setting}",
                "models": [model], "augmentations": [aug], "settings": [setting], "seeds": [0],
            }
        write_config(root, cover_cfg)
        t0 = time.perf_counter()
        snakemake(root, "--config", "smoke=true", timeout=1800)
        print(f"smoke run of config/full.yaml's cover ({len(cover)} of {len(all_runs)} runs): "
              f"{time.perf_counter() - t0:.0f} s")
        # test.yaml now holds the cover's config: the tests get full.yaml's validated one from here
        yield root, expected, all_runs, cover


@pytest.mark.slow
def test_smoke_mode_runs_the_workflow_into_its_own_tree(smoke_study):
    root, _expected, all_runs, cover = smoke_study
    assert len(cover) < len(all_runs)
    kinds = set().union(*(augmentation_kinds(all_runs[rid]) for rid in cover))
    assert kinds == set(augment.KINDS), "every augmentation kind runs through the workflow's rules"
    # config/full.yaml's head-only runs keep their frozen BatchNorm layers in train mode, as the reports'
    # code does, so none can train on cached features; where a config has such runs, the cover has one
    # (the cache's own workflow runs: tests/test_features.py, tests/test_packs.py)
    assert any(features.cacheable(all_runs[rid]) for rid in cover) == any(
        features.cacheable(run) for run in all_runs.values()
    ), "the cover trains on cached features exactly when the config has such a run"
    tree = root / smoke.WORKDIR
    for rid in cover:
        for name in ("metrics.json", "history.csv", "confusion.csv", "model.pt", "curves.png", "confusion.png"):
            assert (tree / "results" / "runs" / rid / name).is_file(), (rid, name)
    assert not (root / "results").exists() and not (root / "reports").exists(), "smoke output outside smoke/"
    first = (tree / "reports" / "summary.html").read_text().splitlines()[0]
    assert "smoke" in first
    # the smoke tree is its own: a real run of the same config has everything still to do
    proc = snakemake(root, "-n", check=True)
    assert "train" in proc.stdout and os.path.isdir(tree / "results")


@pytest.mark.slow
def test_every_experiment_of_full_yaml_trains_in_smoke_mode(smoke_study, tmp_path):
    """Every experiment of config/full.yaml, as its smoke-mode train job: the cover's through Snakemake,
    the others by the job's own call (same resolved run, the smoke tree's prepared slice, step cap)."""
    root, expected, all_runs, cover = smoke_study
    assert {experiments.experiment_id(r) for r in all_runs.values()} == {
        experiments.experiment_id(r) for r in experiments.expand(config.load(REPO / "config" / "full.yaml"))[0].values()
    }, "smoke mode must run every experiment of full.yaml"
    tree = root / smoke.WORKDIR
    prepared = tree / "data" / "prepared" / "fashion_mnist.npz"
    metrics = {}
    for rid, run in all_runs.items():
        if rid in cover:
            out = tree / "results" / "runs" / rid
        else:
            out = tmp_path / rid
            with contextlib.redirect_stdout(io.StringIO()):
                train.train_run(run, prepared, out, device="cpu", threads=1, max_steps=smoke.SMOKE_STEPS)
        metrics[rid] = json.loads((out / "metrics.json").read_text())
    n_slice = round(smoke.SMOKE_DATA["train_limit"] * (1 - expected["data"]["val_fraction"]))
    for rid, m in metrics.items():
        assert m["status"] in ("ok", "not_learned"), (rid, m["status"])
        assert m["config"]["train"]["epochs"] <= smoke.SMOKE_EPOCHS
        assert m["epochs_run"] >= 1 and m["test_accuracy"] is not None, rid
        # the slice's training images, or the setting's stratified fraction of them (rounded per class)
        assert abs(m["n_train"] - n_slice * m["config"]["train"]["train_fraction"]) <= 5, (rid, m["n_train"])
        # a partly frozen network trains fewer parameters than it has (every transfer family of full.yaml)
        trainable = m["config"]["model"]["args"].get("trainable", "all")
        assert (m["trainable_params"] < m["params"]) == (trainable != "all"), (rid, trainable)
    # report E's depthwise ViT with its chained RandAugment + MixUp: built from its code, labels mixed
    vit = metrics["vit_dwconv.e_randaug_mixup.e_default.s0"]
    assert vit["params"] == 423_434 and vit["train_accuracy_vs_primary_label"] is True
    assert vit["config"]["augmentation"]["params"]["steps"][1] == {"kind": "mixup", "alpha": 2.0, "per_batch": False}

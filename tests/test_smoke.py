"""Smoke mode: every experiment of config/full.yaml runs through the real rules for a few steps on a slice
of the real data, into smoke/, with transfer weights this test makes; the report says so on line one."""

from __future__ import annotations

import json
import os
import time

import pytest
import yaml
from conftest import DATASET_DIR, REPO, make_workflow, snakemake, tiny_config, write_config

from fmnist import augment, config, experiments, models, smoke


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """torch hub's cache with a (randomly initialised) checkpoint for every transfer architecture."""
    import torch
    import torchvision

    home = tmp_path / "torch"
    for arch, (_enum, url) in models.TRANSFER_WEIGHTS.items():
        ckpt = home / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), ckpt)
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def test_smoke_switch_errors_name_the_fix(tmp_path):
    root = make_workflow(tmp_path / "wf", tiny_config())
    proc = snakemake(root, "-n", "--config", "smoke=maybe", check=False)
    assert proc.returncode != 0 and "use --config smoke=true" in proc.stdout + proc.stderr


def test_full_config_uses_every_augmentation_kind():
    """The smoke run below is where every augmentation kind runs through the workflow's rules
    (tests/test_recipes.py relies on it): config/full.yaml must keep using each of them."""
    runs, _ = experiments.expand(config.load(REPO / "config" / "full.yaml"))  # load validates
    kinds = set()
    for run in runs.values():
        aug = run["augmentation"]
        kinds.add(aug["kind"])
        kinds.update(step["kind"] for step in aug.get("params", {}).get("steps", []))
    assert kinds == set(augment.KINDS), f"full.yaml runs no {sorted(set(augment.KINDS) - kinds)}"


@pytest.mark.slow
def test_full_config_smoke_runs_every_experiment(tmp_path, torch_home):
    full = yaml.safe_load((REPO / "config" / "full.yaml").read_text())
    # this machine's data and CPU; everything else is full.yaml as it is
    full["data"] = {**full.get("data", {}), "sources": [str(DATASET_DIR)]}
    full.update(device="cpu", threads=1)
    root = make_workflow(tmp_path / "wf")
    write_config(root, full)
    t0 = time.perf_counter()
    snakemake(root, "--config", "smoke=true", timeout=1800)
    print(f"smoke run of config/full.yaml: {time.perf_counter() - t0:.0f} s")

    expected = config.load(root / "test.yaml")  # validated, schema defaults filled in
    smoke.configure(expected)
    runs, _ = experiments.expand(expected)
    assert {experiments.experiment_id(r) for r in runs.values()} == {
        experiments.experiment_id(r) for r in experiments.expand(config.load(REPO / "config" / "full.yaml"))[0].values()
    }, "smoke mode must run every experiment of full.yaml"
    tree = root / smoke.WORKDIR
    n_slice = round(smoke.SMOKE_DATA["train_limit"] * (1 - expected["data"]["val_fraction"]))
    metrics = {rid: json.loads((tree / "results" / "runs" / rid / "metrics.json").read_text()) for rid in runs}
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
    assert not (root / "results").exists() and not (root / "reports").exists(), "smoke output outside smoke/"
    first = (tree / "reports" / "summary.html").read_text().splitlines()[0]
    assert "smoke" in first
    # the smoke tree is its own: a real run of the same config has everything still to do
    proc = snakemake(root, "-n", check=True)
    assert "train" in proc.stdout and os.path.isdir(tree / "results")

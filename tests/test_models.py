"""Model presets: every architecture trains on real images, transfer weights load offline, counts match the reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import REPO

from fmnist import models
from fmnist.models import measure

TRANSFER = sorted(models.TRANSFER_WEIGHTS)


@pytest.fixture(scope="module")
def real_batch(prepared_small):
    """Four real training images, normalised as the trainer does, and their labels."""
    with np.load(prepared_small) as d:
        x = torch.from_numpy(d["train_images"][:4]).float().div(255).unsqueeze(1)
        y = torch.from_numpy(d["train_labels"][:4].astype(np.int64))
    return (x - 0.2860) / 0.3530, y


def _args(name, **extra):
    return {"pretrained": False, **extra} if name in models.TRANSFER_WEIGHTS else extra


@pytest.mark.parametrize("name", models.known_models())
def test_preset_forward_backward_on_real_images(name, real_batch):
    torch.manual_seed(0)
    x, y = real_batch
    if name in TRANSFER or name == "vit_patchless":
        x, y = x[:2], y[:2]  # 224x224 / 784-token inputs: keep the CPU batch tiny
    model = models.build_model(name, _args(name)).train()
    logits = model(x)
    assert logits.shape == (len(x), 10)
    loss = F.cross_entropy(logits, y)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: trainable parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_every_preset_lists_its_constructor_arguments():
    import importlib
    import inspect

    for name, p in models.PRESETS.items():
        cls = getattr(importlib.import_module(f"fmnist.models.{p.module}"), p.cls)
        params = set(inspect.signature(cls).parameters) - {"num_classes"}
        assert params == set(p.args), f"{name}: registry args {sorted(p.args)} != constructor {sorted(params)}"
        assert p.source in {"A", "B", "C", "D", "E", "fmnist"} and p.summary
        assert cls.__doc__ and len(cls.__doc__) > 40, f"{cls.__name__} needs a docstring with its chosen details"


def test_macs_count_convs_linears_attention_and_deformable_convs():
    # standard CNN by hand: conv1 32*9*28*28, conv2 64*32*9*14*14, FC 3136*128 + 128*10
    assert measure.count_macs(models.build_model("standard_cnn")) == 225_792 + 3_612_672 + 401_408 + 1_280
    # the deformable CNN adds its deform GEMMs to the offset convs and FCs FlopCounterMode sees
    plain = measure.count_macs(models.build_model("standard_cnn"))
    deform = measure.count_macs(models.build_model("deformable_cnn"))
    offsets = 18 * 1 * 9 * 784 + 18 * 32 * 9 * 196
    assert deform == plain + offsets
    # attention: 2 * tokens^2 * hidden per layer on top of the 1x1 convs (report E's patch-free ViT:
    # 196 tokens from a 3x3 stride-2 conv, hidden 64, 5 layers, qkv + out + MLP x8, linear head)
    vit = models.build_model("vit_patchless")
    convs_and_linear = 196 * (64 * 9 + 5 * (64 * 3 * 64 + 64 * 64 + 2 * 64 * 512)) + 64 * 10
    assert measure.count_macs(vit) == convs_and_linear + 5 * 2 * 196 * 196 * 64


@pytest.mark.parametrize("trainable", ["head", "last_2", "all"])
def test_transfer_trainable_layers(trainable, real_batch):
    model = models.build_model("resnet18", {"pretrained": False, "trainable": trainable}).train()
    x, y = real_batch
    F.cross_entropy(model(x[:2]), y[:2]).backward()
    for n, p in model.named_parameters():
        should = trainable == "all" or n.startswith("net.fc.") or (
            trainable == "last_2" and n.startswith(("net.layer3.", "net.layer4."))
        )
        assert p.requires_grad == should, n
        assert (p.grad is not None) == should, n
    frozen_bn = [m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and n.startswith("net.layer1")]
    assert all(not m.training for m in frozen_bn) == (trainable != "all")


@pytest.mark.parametrize("name", TRANSFER)
def test_transfer_head_mode_trains_only_the_new_classifier(name):
    model = models.build_model(name, {"pretrained": False, "trainable": "head"})
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == model.parts()[2].weight.numel() + 10


def test_report_d_resizing_is_random_in_training_and_fixed_in_eval(real_batch):
    from fmnist.models.transfer import InputAdapter

    x, _ = real_batch
    adapter = InputAdapter(resize="report_d")
    a, b = adapter(x), adapter(x)
    assert a.shape == (4, 3, 224, 224) and not torch.equal(a, b)
    adapter.eval()
    c, d = adapter(x), adapter(x)
    assert torch.equal(c, d) and c.shape == (4, 3, 224, 224)
    # the eval crop is Resize(256) + CenterCrop(224): the border of the 28x28 image is cut away
    plain = InputAdapter(resize="plain")(x)
    assert not torch.allclose(c, plain)


@pytest.mark.parametrize("name", TRANSFER)
def test_pretrained_weights_load_from_torch_home_without_network(name, tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert models.torch_hub_dir() == __import__("pathlib").Path(torch.hub.get_dir())
    enum, url = models.TRANSFER_WEIGHTS[name]
    weights = getattr(torchvision.models, enum.split(".")[0]).IMAGENET1K_V1
    assert weights.url == url, "registry URL out of step with torchvision"
    torch.manual_seed(123)
    reference = getattr(torchvision.models, name)(weights=None).state_dict()
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    ckpt.parent.mkdir(parents=True)
    torch.save(reference, ckpt)
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: pytest.fail("network touched"))

    for args in ({"pretrained": True}, {"pretrained": False, "weights_path": str(ckpt)}):
        torch.manual_seed(0)  # a different init than the checkpoint's
        model = models.build_model(name, args)
        head = model.parts()[2]
        state = model.net.state_dict()
        compared = 0
        for k, v in state.items():
            if v.shape != reference[k].shape:  # the new 10-class head replaces ImageNet's 1000-class one
                continue
            assert torch.equal(v, reference[k]), f"{k} not loaded from {ckpt.name}"
            compared += 1
        assert compared > 10
        assert head.out_features == 10


def test_missing_weights_error_names_file_directory_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    file = "shufflenetv2_x0.5-f707e7126e.pth"
    where = str(tmp_path / "empty" / "hub" / "checkpoints")
    with pytest.raises(models.WeightsNotFoundError) as err:
        models.build_model("shufflenet_v2_x0_5")  # the preset's default: ImageNet weights
    msg = str(err.value)
    assert file in msg and where in msg and "https://download.pytorch.org/models/" + file in msg
    assert "weights_path" in msg and "pretrained: false" in msg
    # the same check without torch, for the workflow to run while it parses its config
    with pytest.raises(models.WeightsNotFoundError, match="does not exist"):
        models.check_weights("resnet18", {"weights_path": str(tmp_path / "nope.pth")})
    assert models.check_weights("vgg8", {}) is None
    assert models.check_weights("resnet18", {"pretrained": False}) is None


def test_bad_transfer_arguments_are_named():
    with pytest.raises(ValueError, match="trainable must be one of head, last_1"):
        models.build_model("resnet18", {"pretrained": False, "trainable": "last_5"})
    with pytest.raises(ValueError, match="resize must be 'plain' or 'report_d'"):
        models.build_model("resnet18", {"pretrained": False, "resize": "crop"})


def test_models_command_measures_presets():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "fmnist", "models", "--json", "--measure", "--models", "standard_cnn,vit_simple",
         "--seconds", "0.2", "--batch-size", "8", "--threads", "1", "--device", "cpu"],
        capture_output=True, text=True, env=env, check=True, cwd=REPO,
    )
    rows = {r["model"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {"standard_cnn", "vit_simple"}
    assert rows["standard_cnn"]["params"] == 421_642 and rows["standard_cnn"]["macs_per_image"] == 4_241_152
    assert rows["vit_simple"]["train_images_per_second"] > 0
    bad = subprocess.run([sys.executable, "-m", "fmnist", "models", "--list", "--models", "vgg9"],
                         capture_output=True, text=True, env=env, cwd=REPO)
    assert bad.returncode == 2 and "unknown model architecture 'vgg9'" in bad.stderr


def test_full_config_lists_every_published_model_experiment():
    from fmnist import config as fconfig
    from fmnist import experiments

    cfg = fconfig.load(REPO / "config" / "full.yaml")
    runs, studies = experiments.expand(cfg)
    assert {f"report_{r}" for r in "abcde"} <= set(studies)
    experiments_by_study = {s: {experiments.experiment_id(runs[r]) for r in ids} for s, ids in studies.items()}
    published = yaml.safe_load((REPO / "config" / "published.yaml").read_text())["published"]
    for entry in published:
        assert entry["experiment"] in experiments_by_study[entry["study"]], entry
    archs = {run["model"]["arch"] for run in runs.values()}
    from_reports = {n for n, p in models.PRESETS.items() if p.source in set("ABCDE")}
    assert from_reports - {"dilated_cnn"} <= archs


"""Presets and recipes pinned to the reports and their published code (docs/fidelity.md): a drift fails here."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO

from fmnist import augment, config, experiments, models, train
from fmnist.models import measure


@pytest.fixture(scope="module")
def full_runs():
    """Every resolved run of config/full.yaml, by experiment id (model.augmentation.setting)."""
    cfg = config.load(REPO / "config" / "full.yaml")
    runs, _ = experiments.expand(cfg)
    return {experiments.experiment_id(r): r for r in runs.values()}


def params(name: str, **args) -> int:
    if name in models.TRANSFER_WEIGHTS:
        args = {"pretrained": False, **args}
    return measure.count_params(models.build_model(name, args))[0]


# --- report D (models.py, model_training.py, config.py, utils.py of its repository) ---


@pytest.mark.parametrize(("name", "thousands"), [
    ("lenet_like", 173), ("vgg_like", 1_148), ("resnet18", 11_181), ("resnet10", 1_229),
])
def test_report_d_parameter_counts_in_thousands(name, thousands):
    # Table 3 gives counts in whole thousands, truncated (173,962 -> "173k").
    assert params(name) // 1000 == thousands


def test_report_d_resnet10_is_its_models_py():
    net = models.build_model("resnet10")
    assert params("resnet10") == 1_229_002
    stem = net.stem[0]
    assert (stem.kernel_size, stem.stride, stem.bias) == ((7, 7), (2, 2), None)
    x = torch.zeros(2, 1, 28, 28)
    assert net.stem(x).shape == (2, 64, 7, 7)  # 7x7 stride-2 conv, then 3x3 stride-2 max-pool
    assert net.stages(net.stem(x)).shape == (2, 256, 2, 2)  # stages 64, 128/2, 256/2
    assert [len(s.conv1.weight) for s in net.stages] == [64, 128, 256]
    assert (net.fc.in_features, net.fc.out_features) == (256, 10)


def test_report_d_vgg_like_drops_out_before_its_fc_and_the_no_dropout_variant_drops_nothing(full_runs):
    net = models.build_model("vgg_like")
    drops = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.4, 0.4, 0.5]  # models.py: Dropout(0.4) x2 in features, dropout(0.5) before lin1
    args = full_runs["vgg_like_nodropout.flip_affine.d_default"]["model"]["args"]
    plain = models.build_model("vgg_like", args)
    assert all(m.p == 0 for m in plain.modules() if isinstance(m, torch.nn.Dropout))


def test_report_d_recipes_are_its_code(full_runs):
    for model in ("lenet_like", "vgg_like", "vgg_like_nodropout", "resnet10"):
        run = full_runs[f"{model}.flip_affine.d_default"]
        t = run["train"]
        assert (t["batch_size"], t["optimizer"]["name"], t["optimizer"]["lr"]) == (128, "adam", 0.002)
        assert t["normalize"] == {"mean": 0.5, "std": 0.5}
        # fixed epochs (at least 40: the report reads its curves after epoch 40), last epoch tested
        assert t["early_stopping"]["enabled"] is False and t["epochs"] > 40
        assert not t["early_stopping"]["restore_best"]
        assert round(54_000 * t["train_fraction"]) == 48_000  # its 80/20 split of the 60,000
        aug = run["augmentation"]["params"]
        assert (aug["flip_p"], aug["degrees"], aug["translate"]) == (0.5, 10.0, 0.1)
    transfer = full_runs["resnet18_d.flip.d_transfer"]
    # utils.py: RandomResizedCrop(224) + RandomHorizontalFlip only, no affine, for the transfer model
    assert transfer["augmentation"]["kind"] == "flip" and transfer["model"]["args"]["resize"] == "report_d"
    assert transfer["train"]["optimizer"]["lr"] == 0.001 and transfer["train"]["batch_size"] == 128


# --- report B (code in the report's sections 4.1-4.6) ---


def test_report_b_mixup_is_its_mixup_data(full_runs, prepared_small):
    for model in ("standard_cnn", "deformable_cnn"):
        run = full_runs[f"{model}.b_mixup.b_default"]
        assert run["augmentation"]["params"] == {"alpha": 1.0, "per_batch": True}
        assert run["train"]["loss"]["name"] == "bce"  # "MixUp uses BCEWithLogitsLoss"
    from fmnist import data

    arrays, _ = data.load_prepared(prepared_small)
    x = torch.from_numpy(arrays["train_images"][:64]).unsqueeze(1).float() / 255
    y = torch.from_numpy(arrays["train_labels"][:64]).long()
    torch.manual_seed(0)
    out, t = augment.build_augmentation("mixup", {"alpha": 1.0, "per_batch": True})(x, y)
    y2 = y.roll(1, 0)
    differ = y != y2
    lam = t[torch.arange(64), y][differ]
    assert differ.sum() > 32 and torch.allclose(lam, lam[0].expand_as(lam))  # one lambda for the batch
    torch.testing.assert_close(out, lam[0] * x + (1 - lam[0]) * x.roll(1, 0))
    with pytest.raises(ValueError, match="per_batch"):
        augment.resolve("mixup", {"per_batch": "yes"})


def test_report_b_deformable_offsets_start_at_pytorch_default_and_a_keeps_zero():
    for name in ("deformable_cnn", "deformable_cnn_bn"):
        torch.manual_seed(0)
        offsets = [m.offset for m in models.build_model(name).modules() if hasattr(m, "offset")]
        assert len(offsets) == 2 and all(o.weight.abs().sum() > 0 for o in offsets), name
        assert [o.out_channels for o in offsets] == [18, 18]
    zero = [m.offset for m in models.build_model("deformable_cnn_a").modules() if hasattr(m, "offset")]
    assert all(o.weight.abs().sum() == 0 and o.bias.abs().sum() == 0 for o in zero)
    with pytest.raises(ValueError, match="offset_init must be one of default, zero"):
        models.build_model("deformable_cnn", {"offset_init": "random"})


def test_report_b_models_keep_their_shapes():
    # section 4.1: conv 1->32, conv 32->64, FC 64*7*7 -> 128 -> 10; 4.5: BN after each deformable conv
    assert params("standard_cnn") == (32 * 9 + 32) + (64 * 32 * 9 + 64) + (3136 * 128 + 128) + (1280 + 10)
    bn = models.build_model("deformable_cnn_bn")
    assert [m.num_features for m in bn.modules() if isinstance(m, torch.nn.BatchNorm2d)] == [32, 64]
    assert [m.p for m in bn.modules() if isinstance(m, torch.nn.Dropout)] == [0.3, 0.3]


# --- early stopping off means the final weights are the result (issue 10, item 10) ---


@pytest.mark.parametrize(("restore_best", "tested"), [(None, 3), (True, 1)])
def test_fixed_epoch_runs_are_tested_on_their_final_weights(tmp_path, prepared_small, restore_best, tested):
    torch.set_num_threads(1)
    # min_delta so large that no epoch after the first counts as better: the best epoch is 1
    es = {"enabled": False, "min_delta": 100.0, "restore_best": restore_best}
    cfg = config.validate({"defaults": {"epochs": 3, "batch_size": 128, "early_stopping": es},
                           "studies": {"t": {"models": ["standard_cnn"]}}})
    runs, _ = experiments.expand(cfg)
    m = train.train_run(next(iter(runs.values())), prepared_small, tmp_path, device="cpu", log=lambda s: None)
    assert (m["epochs_run"], m["best_epoch"], m["tested_epoch"]) == (3, 1, tested)

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


@pytest.mark.parametrize(
    ("name", "thousands"),
    [
        ("lenet_like", 173),
        ("vgg_like", 1_148),
        ("resnet18", 11_181),
        ("resnet10", 1_229),
    ],
)
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


def test_report_d_vgg_like_drops_out_before_its_fc_and_the_no_dropout_variant_drops_nothing(
    full_runs,
):
    net = models.build_model("vgg_like")
    drops = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops == [
        0.4,
        0.4,
        0.5,
    ]  # models.py: Dropout(0.4) x2 in features, dropout(0.5) before lin1
    args = full_runs["vgg_like_nodropout.flip_affine.d_default"]["model"]["args"]
    plain = models.build_model("vgg_like", args)
    assert all(m.p == 0 for m in plain.modules() if isinstance(m, torch.nn.Dropout))


def test_report_d_recipes_are_its_code(full_runs):
    for model in ("lenet_like", "vgg_like", "vgg_like_nodropout", "resnet10"):
        run = full_runs[f"{model}.flip_affine.d_default"]
        t = run["train"]
        assert (t["batch_size"], t["optimizer"]["name"], t["optimizer"]["lr"]) == (
            128,
            "adam",
            0.002,
        )
        assert t["normalize"] == {"mean": 0.5, "std": 0.5}
        # fixed epochs (at least 40: the report reads its curves after epoch 40), last epoch tested
        assert t["early_stopping"]["enabled"] is False and t["epochs"] > 40
        assert not t["early_stopping"]["restore_best"]
        assert round(54_000 * t["train_fraction"]) == 48_000  # its 80/20 split of the 60,000
        aug = run["augmentation"]["params"]
        # RandomAffine's defaults: nearest sampling (and whole-pixel shifts, tested in test_augment)
        assert (aug["flip_p"], aug["degrees"], aug["translate"], aug["interpolation"]) == (0.5, 10.0, 0.1, "nearest")
    transfer = full_runs["resnet18_d.flip.d_transfer"]
    # utils.py: RandomResizedCrop(224) + RandomHorizontalFlip only, no affine, for the transfer model
    assert (
        transfer["augmentation"]["kind"] == "flip"
        and transfer["model"]["args"]["resize"] == "report_d"
    )
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
    assert differ.sum() > 32 and torch.allclose(
        lam, lam[0].expand_as(lam)
    )  # one lambda for the batch
    torch.testing.assert_close(out, lam[0] * x + (1 - lam[0]) * x.roll(1, 0))
    with pytest.raises(ValueError, match="per_batch"):
        augment.resolve("mixup", {"per_batch": "yes"})


def test_report_b_deformable_offsets_start_at_pytorch_default_and_a_keeps_zero():
    for name in ("deformable_cnn", "deformable_cnn_bn"):
        torch.manual_seed(0)
        offsets = [m.offset for m in models.build_model(name).modules() if hasattr(m, "offset")]
        assert len(offsets) == 2 and all(o.weight.abs().sum() > 0 for o in offsets), name
        assert [o.out_channels for o in offsets] == [18, 18]
    zero = [
        m.offset for m in models.build_model("deformable_cnn_a").modules() if hasattr(m, "offset")
    ]
    assert all(o.weight.abs().sum() == 0 and o.bias.abs().sum() == 0 for o in zero)
    with pytest.raises(ValueError, match="offset_init must be one of default, zero"):
        models.build_model("deformable_cnn", {"offset_init": "random"})


def test_report_b_models_keep_their_shapes():
    # section 4.1: conv 1->32, conv 32->64, FC 64*7*7 -> 128 -> 10; 4.5: BN after each deformable conv
    assert params("standard_cnn") == (32 * 9 + 32) + (64 * 32 * 9 + 64) + (3136 * 128 + 128) + (
        1280 + 10
    )
    bn = models.build_model("deformable_cnn_bn")
    assert [m.num_features for m in bn.modules() if isinstance(m, torch.nn.BatchNorm2d)] == [32, 64]
    assert [m.p for m in bn.modules() if isinstance(m, torch.nn.Dropout)] == [0.3, 0.3]


# --- early stopping off means the final weights are the result ---


@pytest.mark.parametrize(("restore_best", "tested"), [(None, 3), (True, 1)])
def test_fixed_epoch_runs_are_tested_on_their_final_weights(
    tmp_path, prepared_small, restore_best, tested
):
    torch.set_num_threads(1)
    # min_delta so large that no epoch after the first counts as better: the best epoch is 1
    es = {"enabled": False, "min_delta": 100.0, "restore_best": restore_best}
    cfg = config.validate(
        {
            "defaults": {"epochs": 3, "batch_size": 128, "early_stopping": es},
            "studies": {"t": {"models": ["standard_cnn"]}},
        }
    )
    runs, _ = experiments.expand(cfg)
    m = train.train_run(
        next(iter(runs.values())), prepared_small, tmp_path, device="cpu", log=lambda s: None
    )
    assert (m["epochs_run"], m["best_epoch"], m["tested_epoch"]) == (3, 1, tested)


# --- report E (its repository: models/, blocks/, utils/, train.py, constants.py, experimentation.ipynb) ---


def test_report_e_vgg8_has_over_42_million_parameters_and_dsc_saves_about_100k():
    vgg8, dsc = params("vgg8"), params("vgg8_dsc")
    assert vgg8 == 42_655_978 and vgg8 > 42_000_000  # "over 42 million"
    assert vgg8 - dsc == 120_960  # "reduced the total parameters count by ~100,000"
    assert params("vgg12") == 223_062_802  # its VGG12: FC 50176 -> 4096 dominates
    net = models.build_model("vgg8")
    assert net.features(torch.zeros(1, 1, 28, 28)).shape == (
        1,
        128,
        7,
        7,
    )  # "smallest resolution 7x7"
    assert (
        sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 5
    )  # BN after every conv
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.2, 0.2]
    deep = models.build_model("vgg12")
    assert deep.features(torch.zeros(1, 1, 28, 28)).shape == (1, 1024, 7, 7)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in deep.modules()) == 9  # VGG12 has BN too


def test_report_e_vits_are_its_code_and_share_their_settings(full_runs):
    # 419,914: the parameter count its notebook printed for the run whose test accuracy is the report's 86.34%
    assert params("vit_simple") == 419_914
    assert params("vit_dwconv") == 423_434 and params("vit_patchless") == 428_874
    shared = {
        k: models.PRESETS["vit_simple"].args[k]
        for k in ("hidden_size", "num_layers", "num_heads", "mlp_ratio", "dropout")
    }
    assert shared == {
        "hidden_size": 64,
        "num_layers": 5,
        "num_heads": 8,
        "mlp_ratio": 8,
        "dropout": 0.1,
    }
    for name in ("vit_dwconv", "vit_patchless"):
        assert {k: models.PRESETS[name].args[k] for k in shared} == shared, name
    tokens = models.build_model("vit_patchless").embed(torch.zeros(1, 1, 28, 28))
    assert tokens.shape == (1, 64, 14, 14)  # its 3x3 stride-2 conv, not one token per pixel


def test_report_e_depthwise_branch_acts_on_every_block_input():
    from fmnist.models.vit import DepthwiseEncoderE

    torch.manual_seed(0)
    net = models.build_model("vit_dwconv").eval()
    blocks = list(net.blocks)
    assert len(blocks) == 5 and all(
        isinstance(b, DepthwiseEncoderE) for b in blocks
    )  # after every block
    bn, act, conv = blocks[0].dw
    assert isinstance(bn, torch.nn.BatchNorm2d) and isinstance(act, torch.nn.GELU)
    assert (
        conv.groups == conv.in_channels == 64 and conv.kernel_size == (3, 3) and conv.bias is None
    )
    x = torch.randn(2, 64, 4, 4)
    torch.testing.assert_close(
        blocks[0](x), blocks[0].encoder(x) + blocks[0].dw(x)
    )  # Encoder(x) + DW(x)


def test_report_e_resnet18_is_its_cnn_py():
    # its notebook printed 13,101,194, which counts a conv1 per block that forward never uses (4,720,512)
    assert params("resnet18_small") == 13_101_194 - 4_720_512
    net = models.build_model(
        "resnet18_small"
    ).eval()  # a 1x1 map: BatchNorm needs eval mode for one image
    assert net.stem(torch.zeros(1, 1, 28, 28)).shape == (1, 64, 7, 7)
    assert net.stages(net.stem(torch.zeros(1, 1, 28, 28))).shape == (1, 512, 1, 1)


def test_report_e_recipe_and_augmentation_are_its_code(full_runs):
    for model in ("vgg8", "vgg12", "resnet18_small", "vit_simple", "vit_dwconv", "vit_patchless"):
        run = full_runs[f"{model}.e_randaug_mixup.e_default"]
        assert run["augmentation"]["kind"] == "chain"
        randaug, mixup = run["augmentation"]["params"]["steps"]
        assert (randaug["kind"], randaug["num_ops"], randaug["magnitude"]) == ("randaugment", 2, 9)
        assert (mixup["kind"], mixup["alpha"], mixup["per_batch"]) == ("mixup", 2.0, False)
        t = run["train"]
        assert (t["batch_size"], t["epochs"], t["optimizer"]["name"], t["optimizer"]["lr"]) == (
            64,
            100,
            "adam",
            0.001,
        )
        es = t["early_stopping"]
        assert (es["enabled"], es["monitor"], es["patience"], es["restore_best"]) == (
            True,
            "val_loss",
            5,
            False,
        )
        assert t["normalize"] == {"mean": 0.5, "std": 0.5}
        assert round(54_000 * t["train_fraction"]) == 42_000  # its 70/30 split of the 60,000


def test_chain_applies_its_steps_in_order_with_per_image_draws(prepared_small):
    from fmnist import data

    arrays, _ = data.load_prepared(prepared_small)
    x = torch.from_numpy(arrays["train_images"][:64]).unsqueeze(1).float() / 255
    y = torch.from_numpy(arrays["train_labels"][:64]).long()
    steps = [{"kind": "randaugment", "num_ops": 2, "magnitude": 9}, {"kind": "mixup", "alpha": 2.0}]
    chain = augment.build_augmentation("chain", {"steps": steps})
    assert chain.mixes_labels
    torch.manual_seed(3)
    out, target = chain(x, y)
    # the same draws, step by step: RandAugment, then MixUp of the RandAugmented images
    torch.manual_seed(3)
    ra, _ = augment.build_augmentation("randaugment", {"num_ops": 2, "magnitude": 9})(x, y)
    mixed, soft = augment.build_augmentation("mixup", {"alpha": 2.0})(ra, y)
    torch.testing.assert_close(out, mixed)
    torch.testing.assert_close(target, soft)
    lam = target[torch.arange(64), y]
    assert len(torch.unique(lam)) > 32  # a lambda per image
    assert not torch.equal(ra, x)
    with pytest.raises(
        ValueError, match="step 1 \\(mixup\\) mixes labels, so it must be the last step"
    ):
        augment.resolve("chain", {"steps": [{"kind": "mixup"}, {"kind": "flip"}]})
    with pytest.raises(
        ValueError, match="chain: step 2: augmentation kind 'randaugment' takes no parameter 'n'"
    ):
        augment.resolve("chain", {"steps": [{"kind": "flip"}, {"kind": "randaugment", "n": 2}]})



# --- report C (no code published) ---


def test_report_c_tuned_cnn_has_no_pool_between_its_convs_and_dropout_on_the_no_scheduler_recipe(
    full_runs,
):
    net = models.build_model("tuned_cnn")
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 1024]
    between = list(net.features)[
        list(net.features).index(convs[0]) : list(net.features).index(convs[1])
    ]
    assert not any(
        isinstance(m, torch.nn.MaxPool2d) for m in between
    )  # section 2.1B: the pool lowered accuracy
    assert net.features(torch.zeros(1, 1, 28, 28)).shape == (1, 1024, 14, 14)
    assert params("tuned_cnn") == 2_598_538 and params("tuned_cnn", pool_between=True) == 1_093_258
    # table 2: "without dropout 92.48%" is table 1's lr 0.01 run without scheduler
    plain, dropped = full_runs["tuned_cnn.none.c_sgd"], full_runs["tuned_cnn.none.c_sgd_dropout"]
    assert dropped["model"]["args"]["dropout"] == 0.25 and plain["model"]["args"]["dropout"] == 0.0
    assert (
        dropped["train"]["scheduler"] == plain["train"]["scheduler"]
        and plain["train"]["scheduler"]["name"] == "none"
    )
    assert {k: v for k, v in dropped["train"].items() if k != "dropout"} == {
        k: v for k, v in plain["train"].items() if k != "dropout"
    }


# --- recipes that the reports' own numbers pin ---


def test_report_a_patience_is_the_one_its_simple_cnn_shows(full_runs):
    """A's simple CNN has its lowest loss at epoch 12 and stops at epoch 27: a patience of 15 (its
    CutMix runs, best at 34-40, run to epoch 40 without stopping, as 15 allows)."""
    a_runs = [r for exp, r in full_runs.items() if exp.split(".")[-1].startswith("a_")]
    assert len(a_runs) == 18  # 4 CNN, 10 head-only, 4 fine-tuned runs
    for run in a_runs:
        es = run["train"]["early_stopping"]
        assert (es["enabled"], es["monitor"], es["patience"], run["train"]["epochs"]) == (True, "val_loss", 15, 40)
    best, stop = 12, 27
    assert stop - best == 15


def test_report_c_cnn_recipe_is_its_reference_and_keras_defaults(full_runs):
    """C gives SGD momentum lr 0.01 and builds on a Keras tutorial (its [1]: 10 epochs, batch 32);
    its EMA sentence is Keras' use_ema, default momentum 0.99."""
    for setting in ("c_sgd_sched", "c_sgd", "c_sgd_slow", "c_sgd_slow_ema", "c_sgd_dropout",
                    "c_adam_sched", "c_adagrad_sched", "c_rmsprop_sched"):
        t = full_runs[f"tuned_cnn.none.{setting}"]["train"]
        assert (t["epochs"], t["batch_size"], t["early_stopping"]["enabled"]) == (10, 32, False), setting
    ema = full_runs["tuned_cnn.none.c_sgd_slow_ema"]["train"]["ema"]
    assert ema == {**ema, "enabled": True, "decay": 0.99}
    sched = full_runs["tuned_cnn.none.c_sgd_sched"]["train"]["scheduler"]
    # "progressively" lower: every epoch, by exp(-0.1); the lr of the last epoch is 0.01 * e^-0.9
    assert (sched["name"], sched["step_size"]) == ("step", 1)
    assert 0.01 * sched["gamma"] ** 9 == pytest.approx(0.01 * 2.718281828 ** -0.9, rel=1e-5)


@pytest.mark.parametrize(("frozen_norms", "moves"), [("train", True), ("eval", False)])
def test_frozen_batchnorm_statistics_follow_the_named_option(frozen_norms, moves):
    """The usual transfer code (requires_grad False, then model.train()) lets frozen BatchNorm
    layers learn Fashion-MNIST's statistics; frozen_norms eval keeps ImageNet's. Either way their
    scale and shift stay frozen."""
    model = models.build_model("resnet18", {"pretrained": False, "trainable": "head", "image_size": 32,
                                            "frozen_norms": frozen_norms}).train()
    bn = model.net.layer1[0].bn1
    before = bn.running_mean.clone()
    model(torch.randn(4, 1, 28, 28))
    assert bn.training == moves and not bn.weight.requires_grad
    assert (not torch.equal(bn.running_mean, before)) == moves
    with pytest.raises(ValueError, match="frozen_norms must be one of eval, train"):
        models.build_model("resnet18", {"pretrained": False, "frozen_norms": "frozen"})


def test_reports_a_and_c_partly_frozen_transfers_follow_the_usual_code(full_runs):
    partly = {exp: r for exp, r in full_runs.items()
              if r["model"]["args"].get("trainable", "all") != "all" and r["model"].get("source") in ("A", "C")}
    assert len(partly) >= 15  # A's ten head-only runs, C's head and last-1..4 curve
    for exp, run in partly.items():
        assert run["model"]["args"]["frozen_norms"] == "train", exp


# --- every published figure on file or listed as left out ---

FIGURES = {"A": 60, "B": 17, "C": 26, "D": 22, "E": 60}
"""Distinct result figures per report (docs/fidelity.md, "Every published figure")."""


def test_every_published_figure_is_on_file_or_listed_as_left_out():
    import re
    from collections import Counter

    from fmnist import compare

    on_file = Counter()
    for e in compare.load_published(REPO / "config" / "published.yaml"):
        on_file[e["source"]] += (e["value"] is not None) + bool(e["best_epoch"]) + bool(e["epochs_run"])
    doc = (REPO / "docs" / "fidelity.md").read_text()
    block = doc.split("<!-- left-out:start -->")[1].split("<!-- left-out:end -->")[0]
    left_out = Counter()
    for row in re.findall(r"^\| ([A-E]) \|.*\| (\d+) \|[^|]*\|$", block, flags=re.M):
        left_out[row[0]] += int(row[1])
    summary = {r: tuple(map(int, n)) for r, *n in re.findall(r"^\| ([A-E]) \| (\d+) \| (\d+) \| (\d+) \|$", doc, flags=re.M)}
    for report, total in FIGURES.items():
        assert on_file[report] + left_out[report] == total, (report, on_file[report], left_out[report])
        assert summary[report] == (on_file[report], left_out[report], total), report


def test_report_b_best_epochs_and_a_epochs_are_on_file():
    from fmnist import compare

    entries = compare.load_published(REPO / "config" / "published.yaml")
    b = [e["best_epoch"] for e in entries if e["source"] == "B"]
    assert b == [8, 17, 11, 12, 14, 13, 18, 23]  # file order: standard, standard + MixUp, then table order
    a = {e["experiment"]: (e["best_epoch"], e["epochs_run"]) for e in entries
         if e["source"] == "A" and e["metric"] == "test_accuracy"}
    assert a["simple_cnn.none.a_default"] == (12, 27) and len(a) == 18
    assert all(best for best, _ in a.values())
    c_times = {e["experiment"] for e in entries if e["source"] == "C" and e["metric"] == "seconds_per_epoch"}
    # table 5 times the optimal models of table 4
    assert c_times == {"tuned_cnn.none.c_sgd_sched", "resnet18_last4.none.c_transfer", "vit_tiny_best.none.c_vit"}

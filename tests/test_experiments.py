"""Study expansion: resolved runs, stable ids, deduplication, and errors that name the fix."""

import pytest

from fmnist import config as fconfig
from fmnist import experiments
from fmnist.config import ConfigError


def make(cfg):
    return fconfig.validate(cfg)


def test_default_config_expands():
    cfg = fconfig.load(fconfig.REPO_ROOT / "config" / "config.yaml")
    runs, studies = experiments.expand(cfg)
    assert runs and set(studies) == set(cfg["studies"])
    for rid, run in runs.items():
        assert rid == f"{run['model']['name']}.{run['augmentation']['name']}.{run['setting']}.s{run['seed']}"


def test_resolution_order_and_dedup():
    cfg = make({
        "defaults": {"epochs": 7, "optimizer": {"name": "adam", "lr": 0.001}},
        "augmentations": {"mix": {"kind": "mixup", "alpha": 0.4, "train": {"epochs": 9}}},
        "settings": {"sgd": {"optimizer": {"name": "sgd", "lr": 0.05}}},
        "studies": {
            "a": {"models": ["standard_cnn"], "augmentations": ["none", "mix"], "settings": ["default", "sgd"], "seeds": [0, 1]},
            "b": {"models": ["standard_cnn"], "augmentations": ["mix"], "settings": ["sgd"], "seeds": [1]},
        },
    })
    runs, studies = experiments.expand(cfg)
    assert len(runs) == 8 and len(studies["b"]) == 1 and studies["b"][0] in studies["a"]
    r = runs["standard_cnn.mix.sgd.s1"]
    assert r["train"]["epochs"] == 9  # augmentation override beats defaults
    assert r["train"]["optimizer"] == {**r["train"]["optimizer"], "name": "sgd", "lr": 0.05}
    assert r["train"]["optimizer"]["momentum"] == 0.9  # schema default filled after merging
    assert r["augmentation"] == {"name": "mix", "kind": "mixup", "params": {"alpha": 0.4, "per_batch": False}}
    assert runs["standard_cnn.none.default.s0"]["train"]["epochs"] == 7


def test_unknown_model_lists_known_names():
    cfg = make({"studies": {"s": {"models": ["standrd_cnn"]}}})
    with pytest.raises(ConfigError) as err:
        experiments.expand(cfg)
    msg = str(err.value)
    assert "standrd_cnn" in msg and "Did you mean standard_cnn" in msg and "lenet_like" in msg


def test_unknown_augmentation_lists_known_names():
    cfg = make({"studies": {"s": {"models": ["standard_cnn"], "augmentations": ["mixupp"]}}})
    with pytest.raises(ConfigError, match="unknown augmentation 'mixupp'.*Known augmentations: .*flip_affine"):
        experiments.expand(cfg)


def test_schema_errors_name_key_path_and_allowed_values():
    with pytest.raises(ConfigError) as err:
        make({"defaults": {"optimizer": {"name": "adamm"}}, "studies": {"s": {"models": ["standard_cnn"]}}})
    msg = str(err.value)
    assert "defaults.optimizer.name" in msg and "'adam'" in msg and "'sgd'" in msg
    with pytest.raises(ConfigError, match=r"defaults: unknown key 'epoch' \(did you mean 'epochs'\?\)"):
        make({"defaults": {"epoch": 3}, "studies": {"s": {"models": ["standard_cnn"]}}})


def test_setting_typo_is_caught_after_merge():
    cfg = make({"settings": {"fast": {"optimzer": {"lr": 0.1}}}, "studies": {"s": {"models": ["standard_cnn"], "settings": ["fast"]}}})
    with pytest.raises(ConfigError, match="optimzer.*did you mean 'optimizer'"):
        experiments.expand(cfg)


def test_model_args_checked():
    cfg = make({"models": {"wide": {"arch": "standard_cnn", "args": {"chanels": [64, 128]}}},
                "studies": {"s": {"models": ["wide"]}}})
    with pytest.raises(ConfigError, match="takes no argument 'chanels'.*channels"):
        experiments.expand(cfg)


def test_dropout_override_goes_to_model_args():
    cfg = make({"settings": {"d25": {"dropout": 0.25}}, "studies": {"s": {"models": ["lenet_like"], "settings": ["d25"]}}})
    runs, _ = experiments.expand(cfg)
    assert runs["lenet_like.none.d25.s0"]["model"]["args"]["dropout"] == 0.25

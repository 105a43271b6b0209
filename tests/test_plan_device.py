"""Plan figures per GPU model: `plan_device` sizes jobs on a login node without a GPU."""

from __future__ import annotations

import math
import re

import pytest
from conftest import make_workflow, snakemake, tiny_config

from fmnist import config, experiments, plan


def one_run(**overrides):
    cfg = config.validate(tiny_config(**overrides))
    return cfg, next(iter(experiments.expand(cfg)[0].values()))


def job_resources(text: str) -> dict[str, dict[str, str]]:
    """Resources of each train job (by run) and of the features job, from `snakemake -n --verbose`."""
    out = {}
    for block in re.split(r"\n(?=\s*(?:local)?rule \w+:)", text):
        head = re.match(r"\s*rule (train|features):", block)
        line = re.search(r"resources: ([^\n]*)", block)
        if head and line:
            name = re.search(r"wildcards: run=(\S+)", block) if head.group(1) == "train" else None
            out[name.group(1) if name else "features"] = dict(kv.split("=", 1) for kv in line.group(1).split(", "))
    return out


FIGURE = {"train_images_per_s": 10.0, "params": 2**20, "activation_bytes_per_image": 2**16}


@pytest.mark.parametrize("name, slug", [
    ("NVIDIA H200", "h200"),
    ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb"),
    ("Tesla V100-PCIE-32GB", "v100-pcie-32gb"),
    ("NVIDIA GeForce RTX 4090", "rtx-4090"),
    ("h200", "h200"),
])
def test_gpu_model_names_become_plan_keys(name, slug):
    assert plan.gpu_slug(name) == slug


def test_the_gpu_model_is_read_from_the_driver_without_torch(tmp_path):
    info = tmp_path / "0000:01:00.0" / "information"
    info.parent.mkdir()
    info.write_text("Model: \t\t NVIDIA H200\nIRQ:   42\n")
    assert plan.local_gpu_model(tmp_path) == "NVIDIA H200"
    assert plan.local_gpu_model(tmp_path / "none") is None


def test_plan_device_picks_that_gpus_figures_not_this_machines():
    cfg, run = one_run(plan_device="h200", device="auto")
    here = plan.throughput_key(run, plan.device_label("cpu", 1), True)
    h200 = plan.throughput_key(run, "cuda h200", True)
    a100 = plan.throughput_key(run, "cuda a100-sxm4-80gb", True)
    cache = {here: {**FIGURE, "train_images_per_s": 1.0}, a100: {**FIGURE, "train_images_per_s": 5.0},
             h200: FIGURE}
    assert plan.plan_label(cfg) == "cuda h200"
    assert plan.find_figure(cache, run, "cuda h200", True) is FIGURE
    # (3,600 + 1,400 / 3) / 10 s = 6.8 min -> x2 safety = 14 + 5 overhead (test_plan's figures)
    assert plan.resources(run, cfg, 1, cache)["runtime"] == 14 + plan.OVERHEAD_MINUTES
    # no h200 figure: the defaults, never another model's or this machine's figures
    del cache[h200]
    assert plan.resources(run, cfg, 1, cache) == {"runtime": plan.DEFAULT_RUNTIME_MINUTES,
                                                  "mem_mb": plan.DEFAULT_MEM_MB}
    # `a100` names every A100 variant; of several, the slowest figure sizes the job
    a100_40 = plan.throughput_key(run, "cuda a100-pcie-40gb", True)
    cache[a100_40] = {**FIGURE, "train_images_per_s": 2.5}
    assert plan.find_figure(cache, run, "cuda a100", True)["train_images_per_s"] == 2.5
    assert plan.find_figure(cache, run, "cuda a10", True) is None  # a prefix of a word is no match


def test_missing_figures_are_said_once_with_the_command_that_measures_them():
    cfg, run = one_run(plan_device="h200", device="auto")
    runs = {run["id"]: run}
    text = plan.missing_figures_message(runs, cfg, {}, "config/full.yaml")
    assert "1 of 1 training runs" in text and "standard_cnn" in text and "'h200'" in text
    assert "python -m fmnist plan --configfile config/full.yaml" in text and "srun --gpus=1" in text
    assert plan.missing_figures_message(runs, cfg, {plan.throughput_key(run, "cuda h200", True): FIGURE},
                                        "config/full.yaml") is None


def test_measuring_for_another_gpu_model_is_refused(monkeypatch):
    cfg, _run = one_run(plan_device="h200", device="cpu")
    with pytest.raises(config.ConfigError, match="plan_device is 'h200' but this machine measures on 'cpu"):
        plan.measuring_label(cfg)


def test_a_login_node_without_gpu_sizes_jobs_for_the_named_gpu(tmp_path, cache_dir):
    """The workflow on this GPU-less machine: train and features jobs ask for a GPU and the h200 figures."""
    cfg = tiny_config(device="auto", feature_cache=True, studies={"tiny": {
        "models": ["standard_cnn", "resnet18_head"], "augmentations": ["none"], "seeds": [0]}},
        models={"resnet18_head": {"arch": "resnet18", "args": {"trainable": "head"}}})
    root = make_workflow(tmp_path / "wf", cfg)
    runs = experiments.expand(config.load(root / "test.yaml"))[0]
    cnn = runs["standard_cnn.none.default.s0"]
    plan.save_cache({plan.throughput_key(cnn, "cuda h200", True): FIGURE})
    proc = snakemake(root, "-n", "--verbose", "--config", "plan_device=h200")
    text = proc.stdout + proc.stderr
    res = job_resources(text)
    assert res["features"]["gpu"] == "1", text[-3000:]
    assert res["standard_cnn.none.default.s0"]["runtime"] == str(14 + plan.OVERHEAD_MINUTES)
    assert res["standard_cnn.none.default.s0"]["gpu"] == "1"
    assert res["resnet18_head.none.default.s0"]["runtime"] == str(plan.DEFAULT_RUNTIME_MINUTES)
    assert res["features"]["runtime"] == str(plan.DEFAULT_RUNTIME_MINUTES)  # its pass not measured
    # said once, naming the unmeasured model and the command
    assert text.count("the cost plan has no figures") == 1 and "resnet18_head" in text
    # the feature pass measured on the h200: the features job is sized from it
    head = runs["resnet18_head.none.default.s0"]
    plan.save_cache({plan.throughput_key(cnn, "cuda h200", True): FIGURE,
                     plan.throughput_key(head, "cuda h200", True): FIGURE,
                     plan.feature_figure_key(head, "cuda h200"): {"feature_images_per_s": 100.0}})
    again = snakemake(root, "-n", "--verbose", "--config", "plan_device=h200")
    res = job_resources(again.stdout + again.stderr)
    images = sum(plan.split_sizes(config.load(root / "test.yaml")["data"]).values())
    assert res["features"]["runtime"] == str(
        math.ceil(images / 100.0 * plan.SAFETY / 60) + plan.OVERHEAD_MINUTES)
    assert int(res["features"]["mem_mb"]) < plan.DEFAULT_MEM_MB
    # without plan_device this CPU machine's (absent) figures size the jobs, as before, and no GPU
    plain = snakemake(root, "-n", "--verbose")
    assert "the cost plan has no figures" not in plain.stdout + plain.stderr
    assert "gpu=1" not in plain.stdout + plain.stderr

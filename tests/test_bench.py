"""The fast path computes what a plain PyTorch loop computes, and the benchmark commands run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fmnist import bench, cli, data, train
from fmnist.models import build_model


def resolved(model="standard_cnn", augmentation="none", **train_overrides) -> dict:
    # the plain loop below is Adam 1e-3, batch 64, no schedule, float32: pin that whatever config.yaml's defaults are
    recipe = {"batch_size": 64, "optimizer": {"name": "adam", "lr": 1e-3}, "scheduler": {"name": "none"}, "amp": "off",
              **train_overrides}
    return bench.resolve_one(bench.DEFAULT_CONFIG, model, augmentation, seed=0, train=recipe)


def plain_model_and_optimizer(run):
    torch.manual_seed(run["seed"])
    model = build_model(run["model"]["arch"], run["model"]["args"])
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def plain_step(model, optimizer, images_u8, labels, mean, std):
    x = (images_u8.float() / 255 - mean) / std
    loss = F.cross_entropy(model(x), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


@pytest.mark.parametrize("channels_last", [False, True])
def test_step_matches_a_plain_loop(prepared_small, channels_last):
    torch.set_num_threads(1)
    run = resolved(channels_last=channels_last)
    arrays, _ = data.load_prepared(prepared_small)
    split = train.Batches(arrays["train_images"], arrays["train_labels"], torch.device("cpu"))
    torch.manual_seed(run["seed"])
    loop = train.StepLoop.build(run, 10, len(split), torch.device("cpu"))
    model, optimizer = plain_model_and_optimizer(run)
    norm = run["train"]["normalize"]
    fast, plain = [], []
    for step in range(5):
        idx = torch.arange(step * 64, (step + 1) * 64)
        fast.append(float(loop.step(split.images[idx], split.labels[idx])[0]))
        plain.append(plain_step(model, optimizer, split.images[idx], split.labels[idx], norm["mean"], norm["std"]))
    assert fast == pytest.approx(plain, rel=1e-4, abs=1e-5)
    assert plain[-1] < plain[0]  # it learned something, so the comparison is not of constants


def test_epoch_matches_a_plain_loop(prepared_small):
    torch.set_num_threads(1)
    run = resolved()
    arrays, _ = data.load_prepared(prepared_small)
    split = train.Batches(arrays["train_images"], arrays["train_labels"], torch.device("cpu"))
    torch.manual_seed(run["seed"])
    loop = train.StepLoop.build(run, 10, len(split), torch.device("cpu"))
    loss_sum, correct, seen, reason = loop.epoch(split, 1, max_steps=4)
    model, optimizer = plain_model_and_optimizer(run)  # same seed: same weights, then the same permutation
    perm = torch.randperm(len(split))
    norm = run["train"]["normalize"]
    plain_sum = 0.0
    for step in range(4):
        idx = perm[step * 64:(step + 1) * 64]
        plain_sum += 64 * plain_step(model, optimizer, split.images[idx], split.labels[idx], norm["mean"], norm["std"])
    assert reason == "" and seen == 4 * 64
    assert float(loss_sum) == pytest.approx(plain_sum, rel=1e-5)
    assert 0 <= int(correct) <= 4 * 64


def test_bench_throughput_runs_both_loops(prepared_small, capsys):
    rc = cli.main(["bench", "throughput", "--data", str(prepared_small), "--augmentation", "flip_affine",
                   "--images", "128", "--warmup", "1", "--repeats", "2", "--threads", "1",
                   "--workers", "1", "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["images"] == 128 and len(r["samples"]["reference"]) == 2 and len(r["samples"]["fmnist"]) == 2
    assert r["reference_images_per_s"] > 0 and r["fmnist_images_per_s"] > 0
    assert r["ratio"] == pytest.approx(r["fmnist_images_per_s"] / r["reference_images_per_s"], rel=0.01)


def test_reference_dataset_reads_the_prepared_split(prepared_small, tmp_path):
    from torchvision import datasets

    arrays, _ = data.load_prepared(prepared_small)
    ds = datasets.FashionMNIST(str(bench.torchvision_root(arrays, tmp_path)), train=True, download=False)
    assert len(ds) == len(arrays["train_labels"])
    image, label = ds[7]
    assert (np.asarray(image) == arrays["train_images"][7]).all()
    assert label == int(arrays["train_labels"][7])


def test_bench_speedrun_tiny_budget(prepared_small, capsys):
    rc = cli.main(["bench", "speedrun", "--data", str(prepared_small), "--epochs", "1", "--seeds", "0",
                   "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "mean over 1 seeds: test accuracy" in out
    assert "1 epochs on 2000 images" in out  # train + val of the slice, test untouched until the end


def test_bench_speedrun_unknown_study(tmp_path, prepared_small):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("studies: {other: {models: [standard_cnn]}}\n")
    with pytest.raises(bench.ConfigError, match="no `speedrun` study"):
        bench.speedrun(prepared_small, cfg, epochs=1)


@pytest.mark.slow
def test_bench_dag(tmp_path, prepared_small):
    from conftest import make_workflow

    root = make_workflow(tmp_path / "wf")
    r = bench.dag("config/full.yaml", data=prepared_small, repeats=1, threads=1, workdir=root, log=lambda _m: None)
    assert r["snakemake_dry_run_seconds"] > 0
    assert r["training_runs"] >= 1 and r["planned_jobs"] and r["planned_jobs"] > r["training_runs"]
    s = r["startup_seconds"]
    assert s["total"] >= s["import torch"] + s["data load"] > 0

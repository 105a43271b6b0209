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


# --- bench steps and bench gpu -------------------------------------------------------------------

def test_bench_steps_on_the_cpu(prepared_small, capsys):
    rc = cli.main(["bench", "steps", "--device", "cpu", "--data", str(prepared_small), "--steps", "2",
                   "--warmup", "1", "--repeats", "2", "--threads", "1", "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["ms_per_step"]) == {"fp32", "bf16"} and all(v > 0 for v in r["ms_per_step"].values())
    assert r["speedup_vs_fp32"]["fp32"] == 1.0 and len(r["samples"]["bf16"]) == 2
    with pytest.raises(bench.ConfigError, match="need CUDA"):
        bench.steps(device="cpu", variants=["fp32", "cuda_graph"], data=prepared_small)
    with pytest.raises(bench.ConfigError, match="unknown step variant"):
        bench.steps(device="cpu", variants=["fp16"], data=prepared_small)


def test_bench_fused_seeds_computes_each_seeds_own_gradients(prepared_small, capsys):
    """The fused model is the seeds' own models: its gradients before any step equal each separate
    model's on that seed's batch (a fused step that mixed seeds' batches or weights would not)."""
    rc = cli.main(["bench", "fused", "--device", "cpu", "--data", str(prepared_small), "--seeds", "3",
                   "--steps", "2", "--warmup", "1", "--repeats", "1", "--threads", "1", "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["seeds"] == 3 and set(r["ms_per_step_of_all_seeds"]) == {"separate", "fused"}
    assert r["max_relative_grad_difference"] < 1e-4 and r["fused_speedup"] > 0
    # resnet10 has BatchNorm (batch statistics in both variants)
    r = bench.fused_seeds("resnet10", 2, "cpu", prepared_small, n_steps=1, warmup=1, repeats=1, threads=1,
                          log=lambda _m: None)
    assert r["max_relative_grad_difference"] < 1e-4
    with pytest.raises(bench.ConfigError, match="at least 2 seeds"):
        bench.fused_seeds(seeds=1, data=prepared_small)


# `nvidia-smi dmon -s u -d 1` as a 535 driver writes it: a two-line header, repeated, one line per GPU and
# second, '-' where a unit is not supported
DMON_SAMPLE = """\
# gpu     sm    mem    enc    dec    jpg    ofa
# Idx      %      %      %      %      %      %
    0      0      0      0      0      0      0
    1      2      0      0      0      -      -
    0     41     12      0      0      0      0
    1     59     20      0      0      -      -
# gpu     sm    mem    enc    dec    jpg    ofa
# Idx      %      %      %      %      %      %
    0     88     30      0      0      0      0
    1      -     30      0      0      0      0
    0     17
"""


def test_dmon_parser_on_a_recorded_sample():
    sm = bench.parse_dmon(DMON_SAMPLE)
    assert sm == {"0": [0.0, 41.0, 88.0], "1": [2.0, 59.0]}  # '-' and the cut-off last line skipped
    summary = bench.sm_summary(sm)
    assert summary == {"sm_mean_percent": 38.0, "sm_samples": 5, "gpus_seen": ["0", "1"]}
    assert bench.sm_summary({})["sm_mean_percent"] is None
    older = "# gpu   sm   mem   enc   dec\n# Idx    %    %    %    %\n    0   12    1    0    0\n"
    assert bench.parse_dmon(older) == {"0": [12.0]}


GPU_RESULT = {
    "device": "cuda", "cores": 16, "parts": {
        "packed_default_study": {"command": "snakemake --cores 16 --resources gpu=1", "runs": 12,
                                 "wall_seconds": 41.5, "sm_mean_percent": 35.2, "sm_samples": 40, "gpus_seen": ["0"]},
        "one_job_at_a_time_sample": {"runs": ["a", "b"], "wall_seconds": 40.0, "seconds_per_run": 20.0,
                                     "estimated_study_seconds_one_at_a_time": 240.0, "sm_mean_percent": 4.0},
        "step_times": {"error": "RuntimeError: compile failed"},
        "throughput_vs_reports_loop": {"reference_images_per_s": 11900.0, "fmnist_images_per_s": 22800.0,
                                       "ratio": 1.91},
        "full_study_plan": {"unit": "GPU-hours", "hours": 33.9, "wall_hours": 6.1,
                            "machine": "1 GPU(s) x 12 slots of 11750 MB"},
    },
    "packing_ratio": 5.78, "total_seconds": 301.0,
}


def test_gpu_result_writer_and_table(tmp_path):
    bench.write_gpu_result(GPU_RESULT, tmp_path / "out")
    assert json.loads((tmp_path / "out" / bench.GPU_BENCH_FILE).read_text()) == GPU_RESULT
    table = (tmp_path / "out" / bench.GPU_TABLE_FILE).read_text()
    assert "--resources gpu=1, 12 runs: wall seconds" in table and "41.5" in table
    assert "step_times: ERROR RuntimeError: compile failed" in table
    assert "packing ratio (one at a time / packed): 5.78x" in table
    assert "full study: GPU-hours (one job at a time)" in table and "6.1" in table
    assert "1.91x" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error exists only where CUDA is missing")
def test_bench_gpu_without_cuda_is_a_clear_error(prepared_small, tmp_path, capsys):
    assert cli.main(["bench", "gpu", "--data", str(prepared_small), "--out", str(tmp_path / "o")]) == 2
    assert "bench gpu needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing started


def test_bench_gpu_argument_errors(prepared_small, tmp_path, capsys):
    assert cli.main(["bench", "gpu", "--sequential-runs", "0", "--data", str(prepared_small)]) == 2
    assert "--sequential-runs must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "gpu", "--device", "mps"])
    assert cli.main(["bench", "gpu", "--device", "cpu", "--data", str(tmp_path / "none.npz")]) == 2
    assert "no prepared data" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_gpu_rehearsed_on_the_cpu(prepared_small, tmp_path, monkeypatch):
    """Every part of `bench gpu` runs end to end (the workflow calls, dmon absent, steps, throughput,
    plan) with device cpu on a tiny study: what the GPU session runs is not tried there first."""
    from conftest import tiny_config, write_config

    monkeypatch.setenv("FMNIST_CACHE_DIR", str(tmp_path / "cache"))
    cfg = write_config(tmp_path, tiny_config(defaults={"epochs": 1}, studies={
        "tiny": {"models": ["standard_cnn"], "seeds": [0, 1]}}))
    r = bench.gpu(tmp_path / "out", prepared_small, cores=2, sequential_runs=1, budget=800, configfile=cfg,
                  plan_config=cfg, device="cpu", n_steps=2, images=128, plan_seconds=0.05, log=lambda _m: None)
    errors = {k: v["error"] for k, v in r["parts"].items() if "error" in v}
    assert not errors, errors
    assert set(r["parts"]) == {"packed_default_study", "one_job_at_a_time_sample", "step_times", "fused_seeds",
                               "throughput_vs_reports_loop", "full_study_plan"}
    assert r["parts"]["packed_default_study"]["runs"] == 2 and r["packing_ratio"] > 0
    assert (tmp_path / "out" / "packed" / "results" / "runs" / "standard_cnn.none.default.s1" / "metrics.json").exists()
    assert r["parts"]["full_study_plan"]["hours"] > 0
    assert json.loads((tmp_path / "out" / bench.GPU_BENCH_FILE).read_text()) == r


def _amp_metrics(acc: float, seconds: float) -> dict:
    return {"test_accuracy": acc, "train_seconds": seconds}


def test_amp_pairs_compares_each_run_with_itself():
    """bf16 - float32 accuracy and float32 / bf16 time, run by run; a run of one mode only is named."""
    results = {
        "off": {"a.s0": _amp_metrics(0.9100, 30.0), "a.s1": _amp_metrics(0.9120, 33.0), "a.s2": _amp_metrics(0.9, 1.0)},
        "bf16": {"a.s0": _amp_metrics(0.9090, 20.0), "a.s1": _amp_metrics(0.9100, 22.0), "b.s0": _amp_metrics(0.8, 9.0)},
    }
    r = bench.amp_pairs(results)
    assert r["pairs"] == 2 and r["unpaired"] == ["a.s2", "b.s0"]
    assert [row["run"] for row in r["runs"]] == ["a.s0", "a.s1"]
    assert [row["accuracy_diff"] for row in r["runs"]] == pytest.approx([-0.10, -0.20])
    assert [row["train_speedup"] for row in r["runs"]] == pytest.approx([1.5, 1.5])
    assert r["accuracy_diff_mean"] == pytest.approx(-0.15)
    assert r["bf16_lower"] == 2 and r["bf16_higher"] == 0
    # the paired t interval of (-0.1, -0.2): mean -0.15, sd 0.0707, t(0.975, 1) = 12.706
    half = 12.706 * 0.0707107 / 2 ** 0.5
    assert r["accuracy_diff_ci95"] == pytest.approx([-0.15 - half, -0.15 + half], abs=2e-3)
    assert 0 < r["accuracy_diff_p"] < 1
    assert bench.amp_pairs({"off": results["off"], "bf16": {}})["pairs"] == 0


def test_amp_config_pins_amp_and_seeds_of_every_study():
    cfg = bench.amp_config(bench.DEFAULT_CONFIG, "bf16", seeds=5)
    assert cfg["defaults"]["amp"] == "bf16" and cfg["defaults"]["epochs"] == 2  # merged, not replaced
    assert cfg["studies"] and all(s["seeds"] == [0, 1, 2, 3, 4] for s in cfg["studies"].values())
    as_written = bench.amp_config(bench.DEFAULT_CONFIG, "off")
    assert as_written["defaults"]["amp"] == "off"
    assert [s["seeds"] for s in as_written["studies"].values()] == [[0, 1, 2], [0, 1, 2]]


def test_bench_amp_refuses_what_it_would_not_time(tmp_path, capsys):
    (tmp_path / "out" / "bf16" / "results").mkdir(parents=True)
    assert cli.main(["bench", "amp", "--out", str(tmp_path / "out")]) == 2
    assert "would not be trained (and timed) again" in capsys.readouterr().err
    assert cli.main(["bench", "amp", "--out", str(tmp_path / "new"), "--order", "off,off"]) == 2
    assert "give each of off, bf16 once" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_bench_amp_runs_the_study_in_both_modes(tmp_path, monkeypatch, capsys):
    """`bench amp` on a tiny study: both workflow runs train every run in the mode asked for, and
    the table pairs them (the figures themselves are for a real study on a real CPU)."""
    from conftest import tiny_config, write_config

    monkeypatch.setenv("FMNIST_CACHE_DIR", str(tmp_path / "cache"))
    cfg = write_config(tmp_path, tiny_config(defaults={"epochs": 1}))
    out = tmp_path / "out"
    assert cli.main(["bench", "amp", "--configfile", str(cfg), "--seeds", "2", "--out", str(out),
                     "--cores", "2", "--order", "bf16,off"]) == 0
    table = capsys.readouterr().out
    r = json.loads((out / bench.AMP_BENCH_FILE).read_text())
    assert r["order"] == ["bf16", "off"] and set(r["wall_seconds"]) == {"off", "bf16"}
    assert r["pairs"] == 2 and not r["unpaired"]
    assert [row["run"] for row in r["runs"]] == ["standard_cnn.none.default.s0", "standard_cnn.none.default.s1"]
    for mode in ("off", "bf16"):
        for seed in (0, 1):
            m = json.loads((out / mode / "results" / "runs" / f"standard_cnn.none.default.s{seed}" /
                            "metrics.json").read_text())
            assert m["amp_resolved"] == mode and m["config"]["train"]["amp"] == mode
    assert "bf16 lower in" in table and f"{r['pairs']} runs" in table

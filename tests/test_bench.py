"""The fast path computes what a plain PyTorch loop computes, and the benchmark commands run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

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


def train_split_and_loop(run: dict, prepared) -> tuple:
    """The prepared train split on CPU and the trainer's step loop for `run`, built after seeding with
    the run's seed (so a plain model seeded alike starts from the same weights)."""
    arrays, _ = data.load_prepared(prepared)
    split = train.Batches(arrays["train_images"], arrays["train_labels"], torch.device("cpu"))
    torch.manual_seed(run["seed"])
    return split, train.StepLoop.build(run, 10, len(split), torch.device("cpu"))


@pytest.mark.parametrize("channels_last", [False, True])
def test_step_matches_a_plain_loop(prepared_small, channels_last):
    torch.set_num_threads(1)
    run = resolved(channels_last=channels_last)
    split, loop = train_split_and_loop(run, prepared_small)
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
    split, loop = train_split_and_loop(run, prepared_small)
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


def _slot_log(gpu: str, slots: str, start: float, end: float | None) -> str:
    text = f"gpu slot: GPU {gpu}, slot(s) {slots} of 12 taken at {start:.3f} (pid 1, CUDA_VISIBLE_DEVICES={gpu})\n"
    text += "epoch 1 ...\n"
    return text + (f"gpu slot: GPU {gpu}, slot(s) {slots} released at {end:.3f}\n" if end is not None else "")


def test_slot_lines_are_read_as_the_jobs_write_them(tmp_path, monkeypatch):
    """The reader parses the very lines fmnist.gpus.place_job/release_job log (not a copy of them)."""
    from fmnist import gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    lines: list[str] = []
    placement = json.dumps({"devices": ["3"], "slots": 4, "lock_dir": str(tmp_path / "locks")})
    got = gpus.place_job(2, placement, log=lines.append)
    gpus.release_job(got, log=lines.append)
    (interval,) = bench.slot_intervals({"run.a": "\n".join(["setup", *lines, "done"])})
    assert interval["job"] == "run.a" and interval["gpu"] == "3" and interval["slots"] == 2
    assert 0 <= interval["end"] - interval["start"] < 5


def test_concurrency_reads_packing_from_the_slot_lines():
    packed = {"a": _slot_log("0", "0", 100.0, 110.0), "b": _slot_log("0", "1", 102.0, 112.0),
              "c": _slot_log("0", "2", 104.0, 108.0), "plot": "no slot here\n"}
    c = bench.concurrency(bench.slot_intervals(packed))
    assert c["packed"] and c["max_side_by_side"] == 3 and c["jobs_placed"] == 3
    assert c["window"] == [100.0, 112.0] and c["window_seconds"] == 12.0
    # job-seconds 10 + 10 + 4 over 12 busy seconds
    assert c["mean_side_by_side"] == 2.0
    ivs = bench.slot_intervals(packed)
    assert bench.side_by_side_during(ivs[0], ivs) == 2.2  # over a's 10 s: itself 10, b 8, c 4 job-seconds
    # one after another (an end and a start at the same instant do not overlap): not packed
    serial = {"a": _slot_log("0", "0", 100.0, 110.0), "b": _slot_log("0", "0", 110.0, 120.0)}
    c = bench.concurrency(bench.slot_intervals(serial))
    assert not c["packed"] and c["max_side_by_side"] == 1 and "one job at a time" in c["why_not_packed"]
    # two GPUs, one job each at the same time: not packed either (no GPU carried two)
    spread = {"a": _slot_log("0", "0", 100.0, 110.0), "b": _slot_log("1", "0", 100.0, 110.0)}
    assert not bench.concurrency(bench.slot_intervals(spread))["packed"]
    # no slot lines at all (CPU, or unplaced jobs): never called packed
    c = bench.concurrency(bench.slot_intervals({"a": "trained\n"}))
    assert not c["packed"] and c["window"] is None and "unplaced" in c["why_not_packed"]
    # a job killed before its release line: named, and the window unknown
    c = bench.concurrency(bench.slot_intervals({"a": _slot_log("0", "0", 1.0, 2.0), "b": _slot_log("0", "1", 1.0, None)}))
    assert c["jobs_without_release"] == ["b"] and c["window"] is None


# `nvidia-smi dmon -s u -d 1` lines as `Dmon` writes them: each prefixed with the time it was read
DMON_TIMED = "".join(f"{t}\t{line}\n" for t, line in [
    (99.0, "# gpu     sm    mem    enc    dec"), (99.0, "# Idx      %      %      %      %"),
    (99.5, "    0      1      0      0      0"),     # before the window: the report's data prep
    (100.5, "    0     80     10      0      0"), (101.5, "    0     90     10      0      0"),
    (102.5, "    0      -     10      0      0"),     # not supported: skipped
    (111.5, "    0     70     10      0      0"),
    (113.0, "    0      2      0      0      0"),     # after: plots and the report
    (114.0, "    0     3"),                          # cut off
])


def test_sm_is_taken_over_the_training_window_only():
    samples = bench.parse_dmon_timed(DMON_TIMED)
    assert samples == [(99.5, "0", 1.0), (100.5, "0", 80.0), (101.5, "0", 90.0), (111.5, "0", 70.0), (113.0, "0", 2.0)]
    sm = bench.sm_over_window(samples, [100.0, 112.0])
    assert sm["sm_mean_percent_training_window"] == 80.0 and sm["sm_samples_in_window"] == 3
    assert sm["sm_mean_percent_whole_workflow"] == 48.6  # what the old bench reported
    assert bench.sm_over_window(samples, None)["sm_mean_percent_training_window"] is None
    assert bench.sm_over_window(samples, [100.0, 112.0], gpus={"1"})["sm_samples"] == 0


def test_plan_against_measured_runs():
    planned = {"a": 10.0, "b": 10.0, "c": None}
    r = bench.plan_vs_measured(planned, {"a": 12.0, "b": 7.0})
    assert r["runs"]["a"] == {"planned": 10.0, "measured": 12.0, "ratio": 1.2, "within": True}
    assert not r["runs"]["b"]["within"] and not r["all_within"] and r["worst_ratio"] == 0.7
    assert r["median_ratio"] == 0.95
    assert bench.plan_vs_measured(planned, {"a": 12.5})["all_within"]
    assert not bench.plan_vs_measured(planned, {"a": 12.6})["all_within"]
    r = bench.plan_vs_measured(planned, {"a": 10.0, "c": 10.0})  # a run without a plan never passes
    assert r["unplanned"] == ["c"] and not r["all_within"]
    assert not bench.plan_vs_measured(planned, {})["all_within"]
    m = bench.makespan_check(40.0, 46.0)
    assert m == {"planned_seconds": 40.0, "measured_seconds": 46.0, "ratio": 1.15, "within": True}
    assert not bench.makespan_check(40.0, 51.0)["within"] and not bench.makespan_check(0.0, 5.0)["within"]


def test_packed_speedup_from_steady_state_throughput():
    """n jobs side by side, each at packed/alone of its speed alone, carry n x packed/alone of one job."""
    r = bench.packed_speedup_measured({"a": 2000.0, "b": 1500.0, "x": 10.0}, {"a": 8000.0, "b": 6000.0},
                                      {"a": 12.0, "b": 8.0, "x": 12.0})
    assert r["runs"]["a"] == {"side_by_side": 12.0, "packed_over_alone": 0.25, "speedup": 3.0}
    assert r["runs"]["b"]["speedup"] == 2.0 and "x" not in r["runs"]
    assert r["speedup"] == 2.5 and r["side_by_side"] == 10.0
    assert bench.packed_speedup_measured({}, {"a": 1.0}, {})["speedup"] is None


def test_run_bounded_kills_the_whole_process_group(tmp_path):
    """On a timeout no grandchild survives (a training job Snakemake started would load the GPU for
    every later part)."""
    from fmnist.bench.common import run_bounded

    pidfile = tmp_path / "grandchild.pid"
    child = ("import subprocess, sys, time; p = subprocess.Popen(['sleep', '120']); "
             f"open({str(pidfile)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(120)")
    rc, seconds, output = run_bounded([sys.executable, "-c", child], timeout=2, grace=2)
    assert rc is None and seconds < 30 and "started" in output
    pid = int(pidfile.read_text())
    for _ in range(50):
        if not _alive(pid):
            break
        time.sleep(0.1)
    assert not _alive(pid), "the grandchild outlived the timeout"
    rc, _, output = run_bounded([sys.executable, "-c", "print('ok')"], timeout=30)
    assert rc == 0 and output.strip() == "ok"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


GPU_RESULT = {
    "device": "cuda", "cores": 16, "budget": 330.0, "nvidia_smi": "/usr/bin/nvidia-smi", "elapsed_seconds": 301.0,
    "parts": {
        "default_study": {"wall_seconds": 41.5, "runs": 12, "finished": 12, "packed": True, "max_side_by_side": 12,
                          "window_seconds": 30.2, "sm_mean_percent_training_window": 81.3,
                          "sm_mean_percent_whole_workflow": 60.1, "seconds": 42.0},
        "one_at_a_time": {"seconds": 40.0},
        "packed_speedup": {"speedup": 5.1, "side_by_side": 11.5, "plan_says": 5.57, "seconds": 0.0},
        "plan_check": {"plan": {}, "alone": {"runs": {"a": {}}, "all_within": True, "median_ratio": 1.02,
                                             "worst_ratio": 1.1},
                       "packed": {"runs": {"a": {}}, "all_within": False, "median_ratio": 1.3, "worst_ratio": 1.4},
                       "makespan_vs_training_window": {"ratio": 1.2}, "seconds": 20.0},
        "loop_vs_reports": {"fp32": {"ratio": 2.1}, "bf16": {"ratio": 4.3}, "seconds": 30.0},
        "full_study_plan": {"wall_hours": 3.2, "seconds": 50.0},
        "step_times": {"error": "RuntimeError: compile failed"},
        "fused_seeds": {"skipped": "budget spent (3s of 330s left)"},
    },
    "total_seconds": 301.0,
}


def test_gpu_summary_reads_at_a_glance(tmp_path):
    bench.write_gpu_result(GPU_RESULT, tmp_path / "out")
    assert json.loads((tmp_path / "out" / bench.GPU_BENCH_FILE).read_text()) == GPU_RESULT
    table = (tmp_path / "out" / bench.GPU_TABLE_FILE).read_text()
    assert "1 default study <= 45 s: 41.5 s wall, 12 of 12 runs, packed, up to 12 side by side" in table
    assert "2 SM >= 80% over the training window (30.2 s): 81.3 (whole workflow 60.1)" in table
    assert "3 full study <= 4 wall-hours: 3.2 h; plan within 25%: alone yes (median 1.02, worst 1.1), " \
           "packed NO (median 1.3, worst 1.4), makespan/window 1.2" in table
    assert "4 trainer >= 4x the reports' loop: fp32 2.1x, bf16 4.3x" in table
    assert "step_times ERROR, fused_seeds skipped" in table
    assert "  step_times: ERROR RuntimeError: compile failed" in table
    assert len(table.splitlines()) <= 15
    unpacked = json.loads(json.dumps(GPU_RESULT))
    unpacked["parts"]["default_study"].update(packed=False, why_not_packed="the jobs' slot lines show one job at a time")
    bench.write_gpu_result(unpacked, tmp_path / "out")
    assert "NOT packed (the jobs' slot lines show" in (tmp_path / "out" / bench.GPU_TABLE_FILE).read_text()


def test_bench_gpu_without_cuda_says_so_and_skips(tmp_path, capsys):
    """Without CUDA nothing runs in the GPU parts' place (no one-at-a-time figures passed off as them)."""
    if not torch.cuda.is_available():  # the command: the summary, then a clear error
        assert cli.main(["bench", "gpu", "--out", str(tmp_path / "o")]) == 2
        assert "bench gpu needs a CUDA GPU" in capsys.readouterr().err
        assert "NO CUDA HERE" in (tmp_path / "o" / bench.GPU_TABLE_FILE).read_text()
    r = bench.gpu(tmp_path / "p", cuda=False, smi=None, log=lambda _m: None)
    assert r["no_cuda"] and all("no CUDA" in p["skipped"] for p in r["parts"].values())
    table = (tmp_path / "p" / bench.GPU_TABLE_FILE).read_text()
    assert "NO CUDA HERE: every GPU part skipped" in table and "no nvidia-smi" in table
    assert not (tmp_path / "p" / "study").exists()


def test_bench_gpu_refuses_a_used_out(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "bench_gpu.json").write_text("{}")
    assert cli.main(["bench", "gpu", "--device", "cpu", "--out", str(tmp_path / "o")]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_bench_gpu_argument_errors(tmp_path, capsys):
    assert cli.main(["bench", "gpu", "--sequential-runs", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--sequential-runs must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "gpu", "--device", "mps"])


@pytest.mark.slow
def test_bench_gpu_rehearsed_on_the_cpu(tmp_path, monkeypatch, raw_dir):
    """Every part of `bench gpu` runs end to end on a CPU on a tiny study from the raw IDX files, within
    its budget: the unplaced CPU jobs are not called packed, SM is not measured without nvidia-smi."""
    from conftest import tiny_config, write_config

    monkeypatch.setenv("FMNIST_CACHE_DIR", str(tmp_path / "cache"))
    cfg = write_config(tmp_path, tiny_config(defaults={"epochs": 1}, studies={
        "tiny": {"models": ["standard_cnn"], "seeds": [0, 1]}}))
    t0 = time.perf_counter()
    r = bench.gpu(tmp_path / "out", raw=raw_dir, cores=2, sequential_runs=1, budget=900, configfile=cfg,
                  plan_config=cfg, device="cpu", n_steps=2, images=64, plan_seconds=0.05, repeats=1, warmup=1,
                  log=lambda _m: None, smi=None)
    assert time.perf_counter() - t0 < 900 + 30
    errors = {k: v.get("error") or v.get("skipped") for k, v in r["parts"].items() if "seconds" not in v}
    assert not errors, errors
    s = r["parts"]["default_study"]
    assert s["finished"] == 2 and not s["packed"] and "unplaced" in s["why_not_packed"]
    assert s["sm"].startswith("not measured: no nvidia-smi")
    assert r["parts"]["packed_speedup"]["speedup"] is None
    pc = r["parts"]["plan_check"]
    assert set(pc["alone"]["runs"]) == {"standard_cnn.none.default.s0"} and pc["packed"].startswith("not checked")
    lr = r["parts"]["loop_vs_reports"]
    assert lr["fp32"]["ratio"] > 0 and lr["bf16"]["ratio"] > 0
    assert r["parts"]["full_study_plan"]["hours"] > 0
    assert json.loads((tmp_path / "out" / bench.GPU_BENCH_FILE).read_text()) == r
    assert "1 default study <= 45 s:" in (tmp_path / "out" / bench.GPU_TABLE_FILE).read_text()


@pytest.mark.slow
def test_bench_gpu_holds_its_budget_and_leaves_no_job_behind(tmp_path, monkeypatch, raw_dir):
    """A budget too small for the study: the workflow and its jobs are killed at the budget, every later
    part says the budget is spent, and the call returns within the budget and the kill's grace."""
    from conftest import tiny_config, write_config

    monkeypatch.setenv("FMNIST_CACHE_DIR", str(tmp_path / "cache"))
    cfg = write_config(tmp_path, tiny_config(defaults={"epochs": 3}, studies={
        "tiny": {"models": ["standard_cnn"], "seeds": [0, 1]}}))
    t0 = time.perf_counter()
    r = bench.gpu(tmp_path / "out", raw=raw_dir, cores=2, budget=20, configfile=cfg, plan_config=cfg,
                  device="cpu", log=lambda _m: None, smi=None)
    assert time.perf_counter() - t0 < 20 + 15
    assert "ran past the bench's budget" in r["parts"]["default_study"]["error"]
    assert all("budget spent" in r["parts"][p]["skipped"] for p in ("one_at_a_time", "plan_check", "fused_seeds"))
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "out")], capture_output=True, text=True).stdout.split()
    assert not left, f"processes of the killed study still run: {left}"


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

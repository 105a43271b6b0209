"""amp: auto by the CPU's flags; packing jobs onto GPUs and placing them by file locks (no GPU needed:
a configured device list stands in for the GPUs, the jobs train on the CPU)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, make_workflow, planned_jobs, snakemake, tiny_config

from fmnist import amp, config, gpus, plan, train

AMD_FLAGS = "fpu sse2 avx2 fma avx512f avx512bw avx512vl avx512_bf16"
AMX_FLAGS = "fpu sse2 avx2 avx512f amx_tile amx_bf16 amx_int8"
PLAIN_FLAGS = "fpu sse2 avx2 fma avx512f avx512bw avx512vl"  # AVX-512 without bf16: emulated, slower


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / f"cpuinfo-{abs(hash(flags))}"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    return path


@pytest.mark.parametrize(("flags", "expected"), [(AMD_FLAGS, "bf16"), (AMX_FLAGS, "bf16"), (PLAIN_FLAGS, "off"),
                                                 ("", "off")])
def test_amp_auto_follows_the_cpus_bf16_flags(tmp_path, monkeypatch, flags, expected):
    monkeypatch.setenv(amp.CPUINFO_ENV, str(cpuinfo(tmp_path, flags)))
    assert amp.resolve_amp("auto", "cpu") == expected
    assert amp.resolve_amp("auto", "cuda") == "bf16"
    assert amp.resolve_amp("auto", "mps") == "off"
    assert amp.resolve_amp("off", "cuda") == "off"  # a pinned value is never changed
    assert amp.resolve_amp("bf16", "cpu") == "bf16"


def test_a_missing_cpuinfo_means_float32(tmp_path, monkeypatch):
    monkeypatch.setenv(amp.CPUINFO_ENV, str(tmp_path / "absent"))
    assert amp.cpu_flags() == set()
    assert amp.resolve_amp("auto", "cpu") == "off"


@pytest.mark.parametrize(("native", "expected"), [(True, True), (False, False)])
def test_trainer_autocasts_by_the_probe(monkeypatch, native, expected):
    monkeypatch.setattr(amp, "cpu_has_native_bf16", lambda: native)
    cfg = config.validate(tiny_config())
    from fmnist import experiments

    run = next(iter(experiments.expand(cfg)[0].values()))
    assert run["train"]["amp"] == "auto"
    loop = train.StepLoop.build(run, 10, 256, torch.device("cpu"))
    assert loop.use_bf16 is expected
    assert loop.amp_resolved == ("bf16" if expected else "off")


# --------------------------------------------------------------------------------------------
# packing arithmetic
# --------------------------------------------------------------------------------------------

def test_slots_for_memory_shares():
    assert gpus.slots_for(1000, 120_000, 12) == 1          # a small job: one slot of 10 GB
    assert gpus.slots_for(10_001, 120_000, 12) == 2         # just over a slot: two
    assert gpus.slots_for(500_000, 120_000, 12) == 12       # too big to share: the GPU to itself
    assert gpus.slots_for(5_000, 16_000, 1) == 1            # one job per GPU
    with pytest.raises(ValueError):
        gpus.slots_for(1, 1, 0)


def test_packing_counts_the_gpus_the_user_gives():
    cfg = config.validate(tiny_config(gpu_slots=4, gpu_memory_mb=40_000))
    found = [("0", 80_000), ("1", 80_000), ("2", 80_000)]
    p = gpus.packing(cfg, 2, found)
    assert p.devices == ("0", "1") and p.total_slots == 8 and p.memory_mb == 40_000
    assert gpus.packing(cfg, None, found).total_slots == 12
    one = gpus.packing(config.validate(tiny_config(gpu_slots=1)), 1, [("0", 141_000)])
    assert one.total_slots == 1 and one.job_slots(100) == 1 and one.memory_mb == 141_000
    listed = gpus.packing(config.validate(tiny_config(gpu_devices=["3", 5])), None, [])
    assert listed.devices == ("3", "5") and listed.slots == gpus.DEFAULT_SLOTS
    assert listed.memory_mb == gpus.DEFAULT_GPU_MEM_MB


def test_planned_gpu_memory_from_the_measured_figure():
    cfg = config.validate(tiny_config())
    from fmnist import experiments

    run = next(iter(experiments.expand(cfg)[0].values()))
    assert plan.gpu_mem_mb(run, cfg, {}) == plan.GPU_JOB_DEFAULT_MB
    key = plan.throughput_key(run, plan.device_label(cfg["device"], cfg["threads"]), plan.fast_paths_enabled())
    figure = {"params": 2**20, "activation_bytes_per_image": 2**20, "train_images_per_s": 1.0}
    batch = max(run["train"]["batch_size"], run["train"]["eval_batch_size"])
    expected = plan.GPU_DATA_MB + (16 + batch) * plan.SAFETY
    assert plan.gpu_mem_mb(run, cfg, {key: figure}) == pytest.approx(expected)


def test_planned_gpu_memory_for_plan_device_comes_from_that_gpus_figure():
    """A login node without a GPU sizes a cluster's packs by the figure of the GPU plan_device names."""
    from fmnist import experiments

    cfg = config.validate(tiny_config(plan_device="h200", device="auto"))
    run = next(iter(experiments.expand(cfg)[0].values()))
    here = plan.throughput_key(run, plan.device_label(cfg["device"], cfg["threads"]), plan.fast_paths_enabled())
    h200 = plan.throughput_key(run, plan.gpu_label("NVIDIA H200"), plan.fast_paths_enabled())
    small = {"params": 2**20, "activation_bytes_per_image": 2**20, "train_images_per_s": 1.0}
    big = dict(small, params=2**30)
    assert plan.gpu_mem_mb(run, cfg, {here: small, h200: big}) > 16 * 2**10 * plan.SAFETY
    assert plan.gpu_mem_mb(run, cfg, {here: small}) == plan.GPU_JOB_DEFAULT_MB


# --------------------------------------------------------------------------------------------
# assignment by file locks
# --------------------------------------------------------------------------------------------

def test_jobs_spread_over_gpus_then_pack_and_release(tmp_path):
    held = [gpus.acquire(tmp_path, ["0", "1"], 2, 1, timeout=0) for _ in range(4)]
    assert sorted(h.device for h in held) == ["0", "0", "1", "1"]
    assert [h.device for h in held[:2]] in (["0", "1"], ["1", "0"])  # the emptier GPU first
    with pytest.raises(TimeoutError):
        gpus.acquire(tmp_path, ["0", "1"], 2, 1, timeout=0)
    held[0].release()
    again = gpus.acquire(tmp_path, ["0", "1"], 2, 1, timeout=0)
    assert again.device == held[0].device and again.slots == held[0].slots


def test_a_job_needing_several_slots_takes_them_on_one_gpu(tmp_path):
    a = gpus.acquire(tmp_path, ["0", "1"], 3, 1, timeout=0)
    b = gpus.acquire(tmp_path, ["0", "1"], 3, 1, timeout=0)
    assert {a.device, b.device} == {"0", "1"}
    # 4 slots free in all, but 2 per GPU: a 3-slot job waits rather than straddle two GPUs
    with pytest.raises(TimeoutError):
        gpus.acquire(tmp_path, ["0", "1"], 3, 3, timeout=0.3, poll=0.05)
    big = gpus.acquire(tmp_path, ["0", "1"], 3, 2, timeout=0)
    assert len(big.slots) == 2 and len(set(big.slots)) == 2


def test_no_devices_is_a_clear_error(tmp_path):
    with pytest.raises(config.ConfigError, match="gpu_devices"):
        gpus.acquire(tmp_path, [], 2, 1)


HOLDER = r"""
import sys, time
from fmnist import gpus
got = gpus.acquire(sys.argv[1], ["0"], 1, 1, timeout=10)
print("held", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_job_gives_its_slot_back(tmp_path, how):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError):
            gpus.acquire(tmp_path, ["0"], 1, 1, timeout=0)
        proc.send_signal(how)
        proc.wait(timeout=20)
        got = gpus.acquire(tmp_path, ["0"], 1, 1, timeout=10, poll=0.05)
        assert got.device == "0"
    finally:
        proc.kill()
        proc.wait()


def test_place_job_sets_the_visible_gpu(tmp_path, monkeypatch):
    # place_job writes os.environ, as a job's process should: here a copy, so nothing leaks into later tests
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"})
    placement = json.dumps({"devices": ["7"], "slots": 2, "lock_dir": str(tmp_path)})
    assert gpus.place_job(0, placement) is None
    lines = []
    got = gpus.place_job(2, placement, log=lines.append)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7" and got.slots == [0, 1]
    gpus.release_job(got, log=lines.append)
    assert "released" in lines[-1]


# --------------------------------------------------------------------------------------------
# the real workflow: jobs packed onto a configured device list (trained on the CPU)
# --------------------------------------------------------------------------------------------

SLOT_LINE = re.compile(r"gpu slot: GPU (\S+), slot\(s\) (\S+) (?:of \d+ )?(taken|released) at ([0-9.]+)")


def slot_intervals(root: Path) -> list[tuple[str, str, float, float]]:
    """(GPU, slot, taken, released) of every train job, from its log."""
    out = []
    for log in sorted((root / "logs" / "train").glob("*.log")):
        events = {m.group(3): (m.group(1), m.group(2), float(m.group(4))) for m in SLOT_LINE.finditer(log.read_text())}
        assert set(events) == {"taken", "released"}, log.read_text()[-2000:]
        (dev, slots, t0), (_, _, t1) = events["taken"], events["released"]
        out += [(dev, s, t0, t1) for s in slots.split(",")]
    return out


@pytest.mark.slow
def test_workflow_packs_jobs_on_every_gpu_without_sharing_a_slot(tmp_path, monkeypatch):
    monkeypatch.setenv(amp.CPUINFO_ENV, str(cpuinfo(tmp_path, PLAIN_FLAGS)))
    cfg = tiny_config(
        gpu_devices=["0", "1"], gpu_slots=2, gpu_memory_mb=80_000,
        defaults={"epochs": 1}, data={"train_limit": 1000, "test_limit": 200},
        studies={"tiny": {"models": ["standard_cnn"], "augmentations": ["none"], "seeds": [0, 1, 2, 3, 4, 5]}},
    )
    root = make_workflow(tmp_path / "wf", cfg)
    targets = [f"results/runs/standard_cnn.none.default.s{i}/metrics.json" for i in range(6)]
    snakemake(root, *targets, "--cores", "4", "--resources", "gpu=2")
    spans = slot_intervals(root)
    assert len(spans) == 6
    assert {d for d, *_ in spans} == {"0", "1"}  # both GPUs carried jobs
    for dev, slot, t0, t1 in spans:  # a slot holds one job at a time
        for dev2, slot2, u0, u1 in spans:
            if (dev, slot) == (dev2, slot2) and (t0, t1) != (u0, u1):
                assert t1 <= u0 or u1 <= t0, spans
    # jobs ran side by side (4 cores, 4 slots): some moment saw more than one slot held
    peak = max(sum(u0 <= t0 < u1 for _, _, u0, u1 in spans) for _, _, t0, _ in spans)
    assert 2 <= peak <= 4
    metrics = json.loads((root / "results/runs/standard_cnn.none.default.s0/metrics.json").read_text())
    assert metrics["amp_resolved"] == "off" and metrics["config"]["train"]["amp"] == "off"

    # the run's identity holds what `auto` resolved to: on a CPU with native bf16 every run is another run
    assert planned_jobs(root, *targets) == {}
    monkeypatch.setenv(amp.CPUINFO_ENV, str(cpuinfo(tmp_path, AMD_FLAGS)))
    assert planned_jobs(root, "results/runs/standard_cnn.none.default.s0/metrics.json").get("train") == 1


def test_dry_run_asks_gpu_slots_from_the_packing(tmp_path):
    cfg = tiny_config(gpu_devices=["0", "1"], gpu_slots=3, gpu_memory_mb=30_000)
    root = make_workflow(tmp_path / "wf", cfg)
    target = "results/runs/standard_cnn.none.default.s0/metrics.json"
    proc = snakemake(root, target, "-n", "--resources", "gpu=2")
    text = proc.stdout + proc.stderr
    assert re.search(r"gpu=0, (cpus_per_task=\d+, )?gpu_slots=1\b", text), text[-3000:]
    one = snakemake(root, target, "-n", "--config", "gpu_per_run=1")
    assert "gpu=1" in one.stdout + one.stderr and "gpu_slots=1" not in one.stdout + one.stderr


def test_bf16_head_only_run_on_cached_features_equals_the_uncached_one(prepared_small, tmp_path):
    """amp bf16 (what `auto` is on a CPU with native bf16, and on CUDA) keeps the feature cache: the
    cached run's figures are the uncached run's."""
    from test_features import plain_and_cached, small_transfer_run

    from fmnist import features

    torch.set_num_threads(1)
    run = small_transfer_run("mobilenet_v3_small", train_fraction=0.5, amp="bf16",
                             optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})
    assert features.cacheable(run) and features.feature_spec(run)["amp"] == "bf16"
    plain, cached = plain_and_cached(run, prepared_small, tmp_path)
    assert plain["amp_resolved"] == cached["amp_resolved"] == "bf16"
    for key in ("test_loss", "best_val_loss"):
        assert cached[key] == pytest.approx(plain[key], rel=1e-3, abs=1e-4), key
    assert abs(cached["test_accuracy"] - plain["test_accuracy"]) <= 1 / 1000

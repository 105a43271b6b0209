"""Cost plan: figures measured once and cached, per-study sums, and the train rule's resources from them."""

from __future__ import annotations

import json

import pytest
from conftest import make_workflow, snakemake, tiny_config

from fmnist import cli, config, plan


def two_study_config(tmp_path):
    cfg = tiny_config(studies={
        "a": {"models": ["standard_cnn"], "seeds": [0, 1]},
        "b": {"models": ["standard_cnn", "deformable_cnn"], "seeds": [0]},
    })
    path = tmp_path / "plan.yaml"
    path.write_text(json.dumps(cfg))
    return path


def test_plan_measures_once_caches_and_sums_per_study(tmp_path, cache_dir, capsys, monkeypatch):
    path = two_study_config(tmp_path)
    assert cli.main(["plan", "--configfile", str(path), "--seconds", "0.05"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    cached = json.loads((cache_dir / "throughput.json").read_text())
    assert len(cached) == 2 and all(v["train_images_per_s"] > 0 for v in cached.values())
    assert any("|deform_fast|" in k for k in cached)
    # progress on stderr, "k of N", so the plan (or its JSON) on stdout stays clean
    assert "measuring 1 of 2: standard_cnn" in captured.err and "measuring 2 of 2: deformable_cnn" in captured.err
    # a second plan reads the cache and measures nothing
    monkeypatch.setattr(plan.cost, "measure", lambda *a, **k: pytest.fail("measured a cached model"))
    r = plan.plan(config.load(path), measure_missing=True, log=lambda _m: None)
    assert "measuring" not in out and "study" in out and "total" in out
    # tiny_config: 2,000 images, 10% val -> 1,800 train x 2 epochs
    row = r["runs"]["standard_cnn.none.default.s0"]
    assert row["train_images"] == 2 * 1800 and row["eval_images"] == 2 * 200 + 1000
    ips = row["images_per_s"]
    assert row["seconds"] == pytest.approx(3600 / ips + 1400 / (3 * ips))
    # study a: two seeds of standard_cnn; b: standard_cnn s0 (shared with a) + deformable_cnn
    deform = r["runs"]["deformable_cnn.none.default.s0"]["seconds"]
    assert r["studies"]["a"]["hours"] == pytest.approx(2 * row["seconds"] / 3600)
    assert r["studies"]["b"]["hours"] == pytest.approx((row["seconds"] + deform) / 3600)
    assert r["total_hours"] == pytest.approx((2 * row["seconds"] + deform) / 3600)
    # without the fast paths the deformable model is a different figure, not yet measured
    off = plan.plan(config.load(path), fast=False, measure_missing=False)
    assert off["missing"] == ["deformable_cnn"] and off["runs"]["standard_cnn.none.default.s0"]["seconds"]


def test_resources_grow_with_attempt_and_default_without_a_figure(tmp_path, cache_dir):
    cfg = config.load(two_study_config(tmp_path))
    from fmnist import experiments

    run = experiments.expand(cfg)[0]["standard_cnn.none.default.s0"]
    assert plan.resources(run, cfg, 1, cache={}) == {"runtime": plan.DEFAULT_RUNTIME_MINUTES,
                                                     "mem_mb": plan.DEFAULT_MEM_MB}
    key = plan.throughput_key(run, plan.device_label(cfg["device"], cfg["threads"]), True)
    # 10 images/s: (3,600 + 1,400 / 3) / 10 s = 6.8 min -> x2 safety = 13.6 -> 14 + 5 overhead
    figure = {key: {"train_images_per_s": 10.0, "params": 2**20, "activation_bytes_per_image": 2**16}}
    one, two = plan.resources(run, cfg, 1, cache=figure), plan.resources(run, cfg, 2, cache=figure)
    assert one["runtime"] == 14 + plan.OVERHEAD_MINUTES
    assert two["runtime"] == 28 + plan.OVERHEAD_MINUTES and two["mem_mb"] == 2 * one["mem_mb"]
    # 16 MB of weights/grads/Adam state + 64 KB x eval batch 1000 activations, x2 safety, + base
    assert one["mem_mb"] == plan.BASE_MEM_MB + 2 * (16 + 1000 * 64 / 1024)


def test_train_rule_asks_for_the_planned_resources(tmp_path, cache_dir):
    cfg = tiny_config()
    root = make_workflow(tmp_path / "wf", cfg)
    proc = snakemake(root, "-n", "--verbose")
    assert "runtime=120" in proc.stdout + proc.stderr  # no figure yet: the conservative default
    from fmnist import experiments

    run = next(iter(experiments.expand(config.load(root / "test.yaml"))[0].values()))
    key = plan.throughput_key(run, plan.device_label("cpu", 1), True)
    plan.save_cache({key: {"train_images_per_s": 10.0, "params": 2**20, "activation_bytes_per_image": 2**16}})
    out = snakemake(root, "-n", "--verbose")
    text = out.stdout + out.stderr
    # the figures of test_resources_grow_with_attempt...: 14 + 5 minutes, 2,000 + 2 x (16 + 62.5) MB
    assert "runtime=19," in text and "mem_mb=2157," in text, text[-3000:]


# --- wall-clock hours on a machine ---------------------------------------------------------------------

def test_packed_speedup_interpolates_the_measured_points():
    curve = ((1, 1.0), (5, 3.0))
    assert plan.packed_speedup(1, curve) == 1.0
    assert plan.packed_speedup(3, curve) == pytest.approx(2.0)
    assert plan.packed_speedup(9, curve) == 3.0  # flat past the last measurement


def test_makespan_of_lanes_and_of_packed_gpus():
    # two CPU lanes, each job at its own speed: 3|3, then 2 on each lane, then the last 2 -> 7
    assert plan.makespan([(3, 1), (3, 1), (2, 1), (2, 1), (2, 1)], 1, 2, float) == 7
    def speedup(n):
        return 1.0 if n == 1 else 2.0

    # 8 jobs of 10 s on 2 GPUs of 4 slots, 4 side by side at a combined 2x: each takes 20 s, all at once
    assert plan.makespan([(10, 1)] * 8, 2, 4, speedup) == 20
    # a ninth waits for a slot: 40 s
    assert plan.makespan([(10, 1)] * 9, 2, 4, speedup) == 40
    # a job too big to share runs alone at its own speed; the small ones pack on the other GPU
    assert plan.makespan([(10, 4), (10, 1), (10, 1)], 2, 4, speedup) == 20
    assert plan.makespan([(10, 4)], 1, 4, speedup) == 10
    # a job needing both slots of a GPU waits for the second to free up: 10 s, then 5 s alone
    assert plan.makespan([(10, 1), (5, 2)], 1, 2, speedup) == 15
    with pytest.raises(ValueError):
        plan.makespan([(1, 1)], 0, 4)


def gpu_plan(tmp_path, cache_dir, seconds_per_run: float):
    """A plan on CUDA from a given figure: 4 seeds of standard_cnn, each `seconds_per_run` long."""
    cfg = tiny_config(device="cuda", studies={"a": {"models": ["standard_cnn"], "seeds": [0, 1, 2, 3]},
                                              "b": {"models": ["standard_cnn"], "seeds": [0]}})
    path = tmp_path / "gpu.yaml"
    path.write_text(json.dumps(cfg))
    from fmnist import experiments

    validated = config.load(path)
    run = next(iter(experiments.expand(validated)[0].values()))
    key = plan.throughput_key(run, "cuda", True)
    # images per s such that a run (1,800 x 2 trained + 1,400 evaluated at 3x) takes seconds_per_run
    ips = (3600 + 1400 / 3) / seconds_per_run
    plan.save_cache({key: {"train_images_per_s": ips, "params": 2**20, "activation_bytes_per_image": 2**12}})
    return path, validated


def test_wall_clock_hours_of_a_gpu_plan(tmp_path, cache_dir):
    path, cfg = gpu_plan(tmp_path, cache_dir, 360.0)
    r = plan.plan(cfg, measure_missing=False)
    assert r["unit"] == "GPU-hours" and r["total_hours"] == pytest.approx(0.4)
    one = plan.wall_clock(r, cfg, gpus=1, slots=1, gpu_memory_mb=80_000)
    assert one["total_hours"] == pytest.approx(0.4) and one["studies"]["b"] == pytest.approx(0.1)
    # 4 slots: the 4 runs side by side at the measured combined speed of 4 jobs
    packed = plan.wall_clock(r, cfg, gpus=1, slots=4, gpu_memory_mb=80_000)
    assert packed["total_hours"] == pytest.approx(0.1 * 4 / plan.packed_speedup(4))
    assert packed["total_hours"] < one["total_hours"]
    # a GPU too small to share (each run needs more than a slot of 100 MB): one at a time again
    small = plan.wall_clock(r, cfg, gpus=1, slots=4, gpu_memory_mb=400)
    assert small["total_hours"] == pytest.approx(0.4)
    # two GPUs, one job each at a time: twice as fast
    two = plan.wall_clock(r, cfg, gpus=2, slots=1, gpu_memory_mb=80_000)
    assert two["total_hours"] == pytest.approx(0.2)


def test_plan_command_prints_wall_hours(tmp_path, cache_dir, capsys):
    path, _ = gpu_plan(tmp_path, cache_dir, 360.0)
    args = ["plan", "--configfile", str(path), "--no-measure", "--gpus", "2", "--gpu-slots", "1",
            "--gpu-memory-mb", "80000"]
    assert cli.main([*args, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["wall"]["total_hours"] == pytest.approx(0.2) and r["wall"]["machine"].startswith("2 GPU(s) x 1 slots")
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "wall hours" in out and "0.20" in out

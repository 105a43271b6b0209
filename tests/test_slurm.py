"""The tiny study through a real single-node SLURM (tests/slurm_cluster.py) via profiles/slurm: what
sbatch receives for a group of runs (read back with `scontrol show job`), and a job killed at its
time limit that comes back with more. A failing run and the interruptions (a requeue, a SIGTERM) are
in tests/test_slurm_recovery.py, so the two files wait for SLURM on two workers side by side."""

from __future__ import annotations

import json

import pytest
from conftest import make_workflow, tiny_config
from slurm_cluster import (
    FIGURE,
    RUNS_PER_GPU_JOB,
    memory_mb,
    minutes,
    planned,
    run_snakemake,
    shipped_profile,
    slurm_jobs,
    test_cluster_profile,
    workflow_dir,
)


def test_profile_hands_snakemake_the_cluster_settings():
    """profiles/slurm names the executor, per-attempt runtime, requeue, retries, GPU jobs and groups."""
    profile = shipped_profile()
    assert profile["executor"] == "slurm" and profile["slurm-requeue"] is True
    assert profile["retries"] >= 1 and "attempt" in str(profile["default-resources"]["runtime"])
    assert {"slurm_partition", "slurm_account", "mem_mb", "cpus_per_task"} <= set(profile["default-resources"])
    # one GPU per SLURM job (the gpu resource's scope is local), whose grouped training runs take turns
    assert profile["resources"] == ["gpu=1"] and profile["set-resource-scopes"] == {"gpu": "local"}
    assert profile["group-components"] == [f"gpu={RUNS_PER_GPU_JOB}"] and RUNS_PER_GPU_JOB > 1



@pytest.mark.slow
def test_grouped_study_through_sbatch_and_slurmd(slurm_cluster):
    """Three runs share one GPU job, sized from the plan's h200 figures, through to the report."""
    from fmnist import config, plan

    with workflow_dir() as root:
        make_workflow(root, tiny_config(device="auto", defaults={"epochs": 1}, studies={
            "tiny": {"models": ["standard_cnn"], "augmentations": ["none"], "seeds": [0, 1, 2]}}))
        test_cluster_profile(root)
        cache_dir = root / "plan-cache"
        runs = planned(root, cache_dir)
        before = {j["JobId"] for j in slurm_jobs(slurm_cluster["env"])}
        out, seconds = run_snakemake(root, slurm_cluster, "--config", "plan_device=h200", cache_dir=cache_dir)
        print(f"grouped tiny study (3 runs) through SLURM in {seconds:.1f}s")

        assert out.count("has been submitted with SLURM jobid") == 2, out[-4000:]  # prepare + one group
        jobs = [j for j in slurm_jobs(slurm_cluster["env"]) if j["JobId"] not in before]
        group = [j for j in jobs if j.get("Comment", "").startswith("rule_gpu")]
        assert len(group) == 1, [(j["JobId"], j.get("Comment")) for j in jobs]
        job = group[0]
        cfg = config.load(root / "test.yaml", {"plan_device": "h200"})
        cache = {plan.throughput_key(r, "cuda h200", True): FIGURE for r in runs.values()}
        each = [plan.resources(r, cfg, 1, cache) for r in runs.values()]
        # the runs one after another on one GPU: the sum of their planned runtimes, the largest of their
        # planned memory and cpus
        assert minutes(job["TimeLimit"]) == sum(r["runtime"] for r in each) > 3 * plan.OVERHEAD_MINUTES
        assert memory_mb(job) == max(r["mem_mb"] for r in each) > plan.BASE_MEM_MB
        assert int(job["NumCPUs"]) == cfg["threads"]
        assert job["TresPerJob"] == "gres:gpu:1", job  # sbatch --gpus=1
        assert job["JobState"] == "COMPLETED" and job["Requeue"] == "1"
        # the group's own Snakemake ran the three runs, each as a step of the one allocation
        group_log = next((root / ".snakemake" / "slurm_logs").glob("group_gpu*/*.log")).read_text()
        assert all(f"wildcards: run={rid}" in group_log for rid in runs), group_log[-3000:]

        report = (root / "reports" / "summary.html").read_text()
        for rid in runs:
            metrics = json.loads((root / "results" / "runs" / rid / "metrics.json").read_text())
            assert metrics["status"] == "ok" and metrics["epochs_run"] == 1
            assert rid in report



@pytest.mark.slow
def test_a_job_killed_at_its_time_limit_comes_back_with_more_and_resumes(slurm_cluster):
    """SLURM kills the first attempt at its 1-minute limit; the retry asks for more time and resumes."""
    with workflow_dir() as root:
        # float32 and 300 short epochs: about 2 minutes of training on an idle 2-core EPYC, so the run
        # outlives SLURM's kill (the 1-minute limit plus up to a minute of enforcement and KillWait) on
        # any CPU; bf16 would halve it on a CPU with native bf16
        make_workflow(root, tiny_config(device="auto", defaults={
            "epochs": 300, "batch_size": 16, "amp": "off", "early_stopping": {"enabled": False}}))
        # the one change beyond the cluster's: a first attempt too short for the run (the plan's own
        # minimum is its 5 minutes of overhead), then the plan's runtime for attempt 2
        assert "set-resources" not in shipped_profile()
        test_cluster_profile(root, **{"set-resources": {
            "train": {"runtime": "1 if attempt == 1 else 20 * attempt"}}})
        cache_dir = root / "plan-cache"
        (rid,) = planned(root, cache_dir)
        before = {j["JobId"] for j in slurm_jobs(slurm_cluster["env"])}
        out, seconds = run_snakemake(root, slurm_cluster, "--config", "plan_device=h200", cache_dir=cache_dir)
        print(f"time-limited run through SLURM in {seconds:.1f}s")
        jobs = [j for j in slurm_jobs(slurm_cluster["env"])
                if j["JobId"] not in before and j.get("Comment", "").startswith("rule_gpu")]
        states = sorted((int(j["JobId"]), j["JobState"], minutes(j["TimeLimit"])) for j in jobs)
        assert [(s, t) for _, s, t in states] == [("TIMEOUT", 1), ("COMPLETED", 40)], (states, out[-3000:])
        log = (root / "logs" / "train" / f"{rid}.log").read_text()
        assert "resuming after epoch" in log, log[-3000:]
        metrics = json.loads((root / "results" / "runs" / rid / "metrics.json").read_text())
        assert metrics["status"] == "ok" and metrics["epochs_run"] == 300


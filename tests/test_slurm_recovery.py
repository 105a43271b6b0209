"""SLURM jobs that fail or are interrupted mid-training, on the real single-node SLURM
(tests/slurm_cluster.py): a run that fails among packs costs only itself; a group or pack job
requeued (as SLURM requeues a preempted `--requeue` job) and a pack job sent SIGTERM (what a
preemption or a time limit sends first) come back, and their runs resume."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from conftest import make_workflow, tiny_config
from slurm_cluster import (
    FIGURE,
    memory_mb,
    minutes,
    planned,
    run_snakemake,
    slurm_jobs,
    snakemake_call,
    snakemake_running,
    test_cluster_profile,
    wait_for,
    workflow_dir,
)


@pytest.mark.slow
def test_a_failing_run_costs_only_itself_with_packs(slurm_cluster):
    """One run of a pack fails on every attempt (a disk fault: its model file cannot be written): with
    the shipped `keep-going` and `retries: 2` the other pack finishes and its run is linked; the failed
    pack's retries train only the failed run, never its finished neighbour; fixed, the study completes
    without training anything again but what failed."""
    from fmnist import packs

    env = slurm_cluster["env"]
    with workflow_dir() as root:
        make_workflow(root, tiny_config(device="auto", defaults={"epochs": 1}, studies={
            "tiny": {"models": ["standard_cnn"], "augmentations": ["none"], "seeds": [0, 1, 2]}}))
        test_cluster_profile(root)
        cache_dir = root / "plan-cache"
        ok_run, bad_run, other_run = sorted(planned(root, cache_dir))  # packs: (ok, bad), (other)
        obstacle = root / packs.staged_dir(bad_run) / ".model.pt.part"
        obstacle.mkdir(parents=True)
        before = {j["JobId"] for j in slurm_jobs(env)}
        cmd, run_env = snakemake_call(slurm_cluster, "--config", "plan_device=h200", "pack_runs=2",
                                      cache_dir=cache_dir)
        proc = subprocess.run(cmd, cwd=root, env=run_env, capture_output=True, text=True, timeout=900)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out[-3000:]
        states = sorted((j.get("Comment", ""), j["JobState"]) for j in slurm_jobs(env)
                        if j["JobId"] not in before and "train_pack" in j.get("Comment", ""))
        assert states == [("rule_train_pack_wildcards_p000", "FAILED")] * 3 + [
            ("rule_train_pack_wildcards_p001", "COMPLETED")], (states, out[-3000:])
        # keep-going: the other pack's run is in place; the failed pack's finished run stays staged
        assert json.loads((root / "results" / "runs" / other_run / "metrics.json").read_text())["status"] == "ok"
        assert packs.staged_stamp(root / packs.staged_dir(ok_run)) is not None
        ok_log = (root / "logs" / "train_pack" / f"{ok_run}.log").read_text()
        assert ok_log.count("job started") == 1, ok_log  # three attempts, trained once
        bad_log = (root / "logs" / "train_pack" / f"{bad_run}.log").read_text()
        assert bad_log.count("job started") == 3 and bad_log.count("resuming after epoch 1") == 2, bad_log[-3000:]
        assert not (root / "reports" / "summary.html").exists()

        obstacle.rmdir()  # the fault fixed
        out, _ = run_snakemake(root, slurm_cluster, "--config", "plan_device=h200", "pack_runs=2",
                               cache_dir=cache_dir)
        assert out.count("has been submitted with SLURM jobid") == 1, out[-3000:]  # the failed pack only
        assert (root / "logs" / "train_pack" / f"{ok_run}.log").read_text().count("job started") == 1
        for rid in (ok_run, bad_run, other_run):
            assert json.loads((root / "results" / "runs" / rid / "metrics.json").read_text())["status"] == "ok"
        assert (root / "reports" / "summary.html").exists()



@pytest.mark.slow
@pytest.mark.parametrize("mode", ["group", "pack"])
def test_a_requeued_group_job_resumes_its_runs(slurm_cluster, mode):
    """A group job (or a pack job, `pack_runs=2`: its runs side by side, sized as their sum) preempted
    mid-training (`scontrol requeue`, as SLURM requeues a preempted `--requeue` job) runs again under
    the same job id; its runs resume from their last epoch."""
    env = slurm_cluster["env"]
    with workflow_dir() as root:
        epochs = 12
        make_workflow(root, tiny_config(device="auto", defaults={
            "epochs": epochs, "batch_size": 16, "early_stopping": {"enabled": False}}, studies={
            "tiny": {"models": ["standard_cnn"], "augmentations": ["none"], "seeds": [0, 1]}}))
        test_cluster_profile(root)
        cache_dir = root / "plan-cache"
        runs = planned(root, cache_dir)
        before = {j["JobId"] for j in slurm_jobs(env)}
        args = ["--config", "plan_device=h200", *(["pack_runs=2"] if mode == "pack" else [])]
        with snakemake_running(root, slurm_cluster, *args, cache_dir=cache_dir) as proc:
            run_dir = {"group": root / "results" / "runs", "pack": root / "results" / "packs" / "runs"}[mode]
            resume = {rid: run_dir / rid / "resume.pt" for rid in runs}
            wait_for(lambda: any(p.exists() for p in resume.values()), "no run saved an epoch", 600,
                     [*slurm_cluster["logs"], root / "snakemake.out"])
            interrupted = [rid for rid, p in resume.items() if p.exists()]
            comment = {"group": "rule_gpu", "pack": "rule_train_pack"}[mode]
            (group,) = [j for j in slurm_jobs(env)
                        if j["JobId"] not in before and j.get("Comment", "").startswith(comment)]
            subprocess.run(["scontrol", "requeue", group["JobId"]], env=env, check=True)
            proc.wait(timeout=900)
            out = (root / "snakemake.out").read_text()
        assert proc.returncode == 0, out[-6000:]
        (again,) = [j for j in slurm_jobs(env) if j["JobId"] == group["JobId"]]
        assert again["JobState"] == "COMPLETED" and int(again["Restarts"]) == 1, again
        assert out.count("has been submitted with SLURM jobid") == 2, out[-4000:]  # prepare + the group
        for rid in interrupted:
            text = (root / "logs" / "train" / f"{rid}.log").read_text()
            assert "resuming after epoch" in text, text[-3000:]
        for rid in runs:
            metrics = json.loads((root / "results" / "runs" / rid / "metrics.json").read_text())
            assert metrics["status"] == "ok" and metrics["epochs_run"] == epochs
        assert all(rid in (root / "reports" / "summary.html").read_text() for rid in runs)
        if mode == "pack":
            # one SLURM job with both runs side by side, sized from the plan's h200 figures as their sum
            from fmnist import config, plan

            cfg = config.load(root / "test.yaml", {"plan_device": "h200"})
            cache = {plan.throughput_key(r, "cuda h200", True): FIGURE for r in runs.values()}
            each = [plan.resources(r, cfg, 1, cache) for r in runs.values()]
            assert minutes(again["TimeLimit"]) == sum(r["runtime"] for r in each)
            assert memory_mb(again) == sum(r["mem_mb"] for r in each)
            assert int(again["NumCPUs"]) == 2 * cfg["threads"]
            assert again["TresPerJob"] == "gres:gpu:1", again  # sbatch --gpus=1
            summary = json.loads((root / "results" / "packs" / "p000.json").read_text())["runs"]
            times = [(v["train_started"], v["train_finished"]) for v in summary.values()]
            assert len(times) == 2 and max(t for t, _ in times) < min(f for _, f in times), summary



@pytest.mark.slow
def test_a_sigtermed_pack_saves_its_epoch_fails_and_its_retry_resumes(slurm_cluster):
    """`scancel --signal=TERM` (what a preemption or a time limit sends first) on a pack job: the run
    finishes its epoch within the grace period, saves it and exits 143; the job fails, the shipped
    `retries` submits it again, and the run resumes after the saved epoch to the end."""
    env = slurm_cluster["env"]
    with workflow_dir() as root:
        epochs = 12
        make_workflow(root, tiny_config(device="auto", sigterm_grace_s=600, defaults={
            "epochs": epochs, "batch_size": 16, "early_stopping": {"enabled": False}}))
        test_cluster_profile(root)
        cache_dir = root / "plan-cache"
        (rid,) = planned(root, cache_dir)
        before = {j["JobId"] for j in slurm_jobs(env)}
        with snakemake_running(root, slurm_cluster, "--config", "plan_device=h200", "pack_runs=2",
                               cache_dir=cache_dir) as proc:
            resume = root / "results" / "packs" / "runs" / rid / "resume.pt"
            wait_for(resume.exists, "the run saved no epoch", 600,
                     [*slurm_cluster["logs"], root / "snakemake.out"])
            (job,) = [j for j in slurm_jobs(env)
                      if j["JobId"] not in before and j.get("Comment", "").startswith("rule_train_pack")]
            subprocess.run(["scancel", "--signal=TERM", job["JobId"]], env=env, check=True)
            proc.wait(timeout=900)
            out = (root / "snakemake.out").read_text()
        run_log = (root / "logs" / "train_pack" / f"{rid}.log").read_text()
        assert proc.returncode == 0, out[-4000:] + run_log[-3000:]
        stopped = re.search(r"SIGTERM: epoch (\d+) finished within the 600s grace period and is saved; "
                            r"exit code 143", run_log)
        assert stopped, run_log[-3000:]
        assert f"resuming after epoch {stopped.group(1)}" in run_log, run_log[-3000:]
        states = sorted((int(j["JobId"]), j["JobState"]) for j in slurm_jobs(env)
                        if j["JobId"] not in before and j.get("Comment", "").startswith("rule_train_pack"))
        assert [s for _, s in states] == ["FAILED", "COMPLETED"], (states, out[-3000:])
        # (the pack's own log, logs/train_pack/p000.log, is the retry's: Snakemake clears a job's log
        # before it runs; tests/test_sigterm.py checks that a pack passes SIGTERM on and waits)
        metrics = json.loads((root / "results" / "runs" / rid / "metrics.json").read_text())
        assert metrics["status"] == "ok" and metrics["epochs_run"] == epochs

"""The tiny study through a real single-node SLURM (slurmctld + slurmd on 127.0.0.1) via profiles/slurm.

The test starts its own munged, slurmctld and slurmd (Debian packages `slurm-wlm` and `munge`, run as
root, no accounting database) with a private config, spool and ports, so it touches no system SLURM;
missing packages fail the test, they do not skip it.

The node declares one GPU as a generic resource (`gpu:h200:1`, no device file: jobs are scheduled as
on a GPU cluster and train on the CPU), and more CPUs and memory than this machine has
(`SlurmdParameters=config_overrides`; nothing enforces them), so the shipped profile's requests are
submitted as they ship. What sbatch received is read back with `scontrol show job`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SNAKEMAKE, make_workflow, tiny_config

SLURM_TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NODE_CPUS, NODE_MEMORY_MB = 4, 16000


def slurm_conf(base: Path, host: str, cpus: int, memory_mb: int) -> str:
    ports = free_port(), free_port()
    return f"""\
ClusterName=fmnisttest
GresTypes=gpu
SlurmdParameters=config_overrides
KillWait=5
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={base}/munge/munge.sock
StateSaveLocation={base}/slurmctld
SlurmdSpoolDir={base}/slurmd
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MinJobAge=3600
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:h200:1 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def wait_for(check, what: str, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}:\n{p.read_text()[-2000:]}" for p in logs if p.exists())
    raise AssertionError(f"{what} within {timeout}s\n{tails}")


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node SLURM; yields the environment its clients (sbatch, squeue) need."""
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"SLURM test needs {', '.join(missing)}: `apt-get install slurm-wlm munge` (as root)")
    if os.geteuid() != 0:
        pytest.fail("the SLURM test starts slurmd, which must run as root")
    # slurmd runs the jobs as root in their own directories: a world-traversable path under /tmp.
    base = Path(tempfile.mkdtemp(prefix="fmnist-slurm-", dir="/tmp"))
    base.chmod(0o755)  # munged requires every directory above its socket to be traversable
    host = socket.gethostname().split(".")[0]
    conf = base / "slurm.conf"
    conf.write_text(slurm_conf(base, host, cpus=NODE_CPUS, memory_mb=NODE_MEMORY_MB))
    (base / "gres.conf").write_text(f"AutoDetect=off\nNodeName={host} Name=gpu Type=h200 File=/dev/null\n")
    for d in ("munge", "slurmctld", "slurmd"):
        (base / d).mkdir(mode=0o755)
    # Inside a job, the plugin's jobstep calls `srun` with every SLURM_* variable but a few removed,
    # SLURM_CONF among them; a real cluster's clients find /etc/slurm/slurm.conf, ours are pointed
    # at the private config by a shim that runs the real srun.
    shims = base / "bin"
    shims.mkdir(mode=0o755)
    real_srun = shutil.which("srun")
    (shims / "srun").write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {real_srun} "$@"\n')
    (shims / "srun").chmod(0o755)
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": f"{shims}:{os.environ['PATH']}"}
    daemons: list[subprocess.Popen] = []
    logs = [base / "munged.log", base / "slurmctld.log", base / "slurmd.log"]
    try:
        key = base / "munge" / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
        key.chmod(0o400)
        sock = base / "munge" / "munge.sock"
        daemons.append(subprocess.Popen(
            ["munged", "--foreground", f"--socket={sock}", f"--key-file={key}",
             f"--pid-file={base}/munge/munged.pid", f"--log-file={base}/munged.log",
             f"--seed-file={base}/munge/munged.seed"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        wait_for(lambda: sock.exists(), "munged did not open its socket", 20, logs)
        # -D: stay in the foreground, so the daemons are our children and stop with us; -c: fresh state.
        daemons.append(subprocess.Popen(["slurmctld", "-D", "-c", "-f", str(conf)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        daemons.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def node_idle() -> bool:
            proc = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            return proc.returncode == 0 and proc.stdout.strip() == "idle"

        wait_for(node_idle, "the SLURM node did not become idle", 60, logs)
        yield {"env": env, "base": base, "logs": logs}
    finally:
        subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True, timeout=30)
        for daemon in reversed(daemons):
            with contextlib.suppress(ProcessLookupError):
                daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)


def test_profile_hands_snakemake_the_cluster_settings():
    """profiles/slurm names the executor, per-attempt runtime, requeue, retries, GPU jobs and groups."""
    profile = shipped_profile()
    assert profile["executor"] == "slurm" and profile["slurm-requeue"] is True
    assert profile["retries"] >= 1 and "attempt" in str(profile["default-resources"]["runtime"])
    assert {"slurm_partition", "slurm_account", "mem_mb", "cpus_per_task"} <= set(profile["default-resources"])
    # one GPU per SLURM job (the gpu resource's scope is local), whose grouped training runs take turns
    assert profile["resources"] == ["gpu=1"] and profile["set-resource-scopes"] == {"gpu": "local"}
    assert profile["group-components"] == [f"gpu={RUNS_PER_GPU_JOB}"] and RUNS_PER_GPU_JOB > 1


RUNS_PER_GPU_JOB = 4
FIGURE = {"train_images_per_s": 10.0, "params": 2**20, "activation_bytes_per_image": 2**16}


def shipped_profile() -> dict:
    return yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())


def test_cluster_profile(root: Path, **extra) -> None:
    """profiles/slurm as shipped, changed only where this cluster forces it: its partition (`debug`),
    no accounts, no accounting database (squeue for status, checked from the first second), a local
    file system (short latency-wait), and SLURM logs kept to read; `extra` for a test's own setting."""
    profile = shipped_profile()
    profile["default-resources"]["slurm_partition"] = "debug"
    del profile["default-resources"]["slurm_account"]
    profile.update({
        "slurm-no-account": True,
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 1,
        "slurm-keep-successful-logs": True,
        "latency-wait": 5,
        **extra,
    })
    (root / "profiles" / "test-slurm").mkdir(exist_ok=True)
    (root / "profiles" / "test-slurm" / "config.yaml").write_text(yaml.safe_dump(profile))


test_cluster_profile.__test__ = False  # a helper, not a test


def slurm_jobs(env: dict) -> list[dict[str, str]]:
    """Every job slurmctld still knows (MinJobAge=3600: a finished job stays known for an hour, longer
    than any test here even on a loaded machine), as scontrol reports what sbatch received."""
    out = subprocess.run(["scontrol", "show", "job", "-o"], env=env, capture_output=True, text=True,
                         check=True).stdout
    jobs = []
    for line in out.splitlines():
        if line.strip() and not line.startswith("No jobs"):
            jobs.append(dict(kv.split("=", 1) for kv in line.split() if "=" in kv))
    return jobs


def minutes(limit: str) -> int:
    """A SLURM TimeLimit ([D-]HH:MM:SS) in minutes."""
    days, _, hms = limit.rpartition("-")
    h, m, sec = (int(x) for x in hms.split(":"))
    return int(days or 0) * 1440 + h * 60 + m + (sec > 0)


def memory_mb(job: dict[str, str]) -> int:
    value = job.get("MinMemoryNode") or job["mem"]
    return int(float(value[:-1]) * {"M": 1, "G": 1024, "T": 1024**2}[value[-1]])


@contextlib.contextmanager
def workflow_dir():
    # Under /tmp (not pytest's per-user 0700 tree) so the job, started by slurmd, can enter it.
    root = Path(tempfile.mkdtemp(prefix="fmnist-slurm-wf-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_snakemake(root: Path, cluster: dict, *args: str, cache_dir: Path) -> tuple[str, float]:
    env = {**cluster["env"], "PYTHONPATH": str(REPO / "src"), "FMNIST_CACHE_DIR": str(cache_dir)}
    cmd = [SNAKEMAKE, "--workflow-profile", "profiles/test-slurm", "--configfile", "test.yaml", *args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    slurm_logs = "\n".join(
        f"--- {p}:\n{p.read_text()[-1500:]}" for p in sorted((root / ".snakemake").glob("slurm_logs/**/*.log"))
    )
    assert proc.returncode == 0, f"snakemake on SLURM failed:\n{out[-6000:]}\n{slurm_logs}"
    return out, seconds


def planned(root: Path, cache_dir: Path, **figures) -> dict[str, dict]:
    """The study's runs, with h200 figures written to the plan cache the jobs are sized from."""
    from fmnist import config, experiments, plan

    runs = experiments.expand(config.load(root / "test.yaml"))[0]
    cache = {plan.throughput_key(run, "cuda h200", True): FIGURE for run in runs.values()}
    cache_dir.mkdir(parents=True, exist_ok=True)
    plan.save_cache(cache, cache_dir / "throughput.json")
    return runs


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
        run_env = {**env, "PYTHONPATH": str(REPO / "src"), "FMNIST_CACHE_DIR": str(cache_dir)}
        cmd = [SNAKEMAKE, "--workflow-profile", "profiles/test-slurm", "--configfile", "test.yaml",
               "--config", "plan_device=h200", "pack_runs=2"]
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
        run_env = {**env, "PYTHONPATH": str(REPO / "src"), "FMNIST_CACHE_DIR": str(cache_dir)}
        cmd = [SNAKEMAKE, "--workflow-profile", "profiles/test-slurm", "--configfile", "test.yaml",
               "--config", "plan_device=h200", *(["pack_runs=2"] if mode == "pack" else [])]
        log = root / "snakemake.out"  # a file, not a pipe: nobody reads a pipe while the test waits
        proc = subprocess.Popen(cmd, cwd=root, env=run_env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        try:
            run_dir = {"group": root / "results" / "runs", "pack": root / "results" / "packs" / "runs"}[mode]
            resume = {rid: run_dir / rid / "resume.pt" for rid in runs}
            wait_for(lambda: any(p.exists() for p in resume.values()), "no run saved an epoch", 300,
                     slurm_cluster["logs"])
            interrupted = [rid for rid, p in resume.items() if p.exists()]
            comment = {"group": "rule_gpu", "pack": "rule_train_pack"}[mode]
            (group,) = [j for j in slurm_jobs(env)
                        if j["JobId"] not in before and j.get("Comment", "").startswith(comment)]
            subprocess.run(["scontrol", "requeue", group["JobId"]], env=env, check=True)
            proc.wait(timeout=900)
            out = log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
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
        run_env = {**env, "PYTHONPATH": str(REPO / "src"), "FMNIST_CACHE_DIR": str(cache_dir)}
        cmd = [SNAKEMAKE, "--workflow-profile", "profiles/test-slurm", "--configfile", "test.yaml",
               "--config", "plan_device=h200", "pack_runs=2"]
        log = root / "snakemake.out"
        proc = subprocess.Popen(cmd, cwd=root, env=run_env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        try:
            resume = root / "results" / "packs" / "runs" / rid / "resume.pt"
            wait_for(resume.exists, "the run saved no epoch", 300, slurm_cluster["logs"])
            (job,) = [j for j in slurm_jobs(env)
                      if j["JobId"] not in before and j.get("Comment", "").startswith("rule_train_pack")]
            subprocess.run(["scancel", "--signal=TERM", job["JobId"]], env=env, check=True)
            proc.wait(timeout=900)
            out = log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
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

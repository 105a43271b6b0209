"""The tiny study through a real single-node SLURM (slurmctld + slurmd on 127.0.0.1) via profiles/slurm.

The test starts its own munged, slurmctld and slurmd (Debian packages `slurm-wlm` and `munge`, run as
root, no accounting database) with a private config, spool and ports, so it touches no system SLURM;
missing packages fail the test, they do not skip it.
"""

from __future__ import annotations

import contextlib
import json
import os
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


def slurm_conf(base: Path, host: str, cpus: int, memory_mb: int) -> str:
    ports = free_port(), free_port()
    return f"""\
ClusterName=fmnisttest
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
MinJobAge=300
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
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
    memory_mb = 4000
    conf.write_text(slurm_conf(base, host, cpus=min(os.cpu_count() or 1, 2), memory_mb=memory_mb))
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
    """profiles/slurm names the executor, per-attempt runtime, requeue, retries and the gpu scope."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["slurm-requeue"] is True
    assert profile["retries"] >= 1 and "attempt" in str(profile["default-resources"]["runtime"])
    assert {"slurm_partition", "slurm_account", "mem_mb", "cpus_per_task"} <= set(profile["default-resources"])
    assert profile["set-resource-scopes"] == {"gpu": "local"}
    assert profile["set-resources"]["train"]["gpu"] == 1


@pytest.mark.slow
def test_tiny_study_through_sbatch_and_slurmd(slurm_cluster, tmp_path_factory):
    # Under /tmp (not pytest's per-user 0700 tree) so the job, started by slurmd, can enter it.
    root = Path(tempfile.mkdtemp(prefix="fmnist-slurm-wf-", dir="/tmp"))
    root.chmod(0o755)
    try:
        run_study(root, slurm_cluster)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_study(root: Path, cluster: dict) -> None:
    make_workflow(root, tiny_config(defaults={"epochs": 1}))
    # profiles/slurm as shipped, with the settings a test cluster needs changed in a copy: its
    # partition, no account, CPU jobs, memory that fits the test node.
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"].update(slurm_partition="debug", mem_mb=1000)
    del profile["default-resources"]["slurm_account"]
    profile["set-resources"]["train"].update(gpu=0, mem_mb=1500)
    profile.update({
        "slurm-no-account": True,
        "slurm-status-command": "squeue",  # no accounting database, so no sacct
        "slurm-init-seconds-before-status-checks": 1,
        "slurm-keep-successful-logs": True,
        "latency-wait": 5,
        "jobs": 2,
    })
    (root / "profiles" / "test-slurm").mkdir()
    (root / "profiles" / "test-slurm" / "config.yaml").write_text(yaml.safe_dump(profile))
    env = {**cluster["env"], "PYTHONPATH": str(REPO / "src")}
    cmd = [SNAKEMAKE, "--workflow-profile", "profiles/test-slurm", "--configfile", "test.yaml"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    slurm_logs = "\n".join(
        f"--- {p}:\n{p.read_text()[-1500:]}" for p in sorted((root / ".snakemake").glob("slurm_logs/**/*.log"))
    )
    assert proc.returncode == 0, f"snakemake on SLURM failed:\n{out[-6000:]}\n{slurm_logs}"
    print(f"tiny study through SLURM in {seconds:.1f}s")

    # The heavy rules went through sbatch and slurmd: each left a SLURM log under .snakemake/slurm_logs.
    for rule in ("prepare", "train"):
        assert list((root / ".snakemake" / "slurm_logs").glob(f"rule_{rule}/**/*.log")), (
            f"no SLURM job log for rule {rule}:\n{out[-4000:]}"
        )
    assert out.count("has been submitted with SLURM jobid") == 2, out[-4000:]  # prepare, train
    metrics = json.loads(next((root / "results" / "runs").glob("*/metrics.json")).read_text())
    assert metrics["status"] == "ok" and metrics["epochs_run"] == 1
    report = root / "reports" / "summary.html"
    assert report.exists() and metrics["run_id"] in report.read_text()

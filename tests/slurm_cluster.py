"""A real single-node SLURM (slurmctld + slurmd on 127.0.0.1) for the tests of profiles/slurm
(tests/test_slurm.py, tests/test_slurm_recovery.py), and the helpers they share.

`running_cluster()` (conftest.py's `slurm_cluster` fixture, one cluster per test module, so the two
files on two pytest-xdist workers each wait on their own) starts its own munged, slurmctld and
slurmd (Debian packages `slurm-wlm` and `munge`, run as root, no accounting database) with a private
config, spool and ports, so it touches no system SLURM and no other test's cluster; missing
packages fail the test, they do not skip it.

The node declares one GPU as a generic resource (`gpu:h200:1`, no device file: jobs are scheduled as
on a GPU cluster and train on the CPU), and more CPUs and memory than this machine has
(`SlurmdParameters=config_overrides`; nothing enforces them), so the shipped profile's requests are
submitted as they ship. What sbatch received is read back with `scontrol show job`.
"""

from __future__ import annotations

import contextlib
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
from conftest import REPO, SNAKEMAKE

SLURM_TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NODE_CPUS, NODE_MEMORY_MB = 4, 16000


def slurm_conf(base: Path, host: str, cpus: int, memory_mb: int) -> str:
    """The cluster's slurm.conf. `cred_expire=20`: a requeued job waits that long before it may start
    again (SLURM's default, 120 s, is what each requeue test would otherwise sit through); a job
    step's credential lives as long, ample for a step launched on this one node."""
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
AuthInfo=socket={base}/munge/munge.sock,cred_expire=20
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


@contextlib.contextmanager
def running_cluster():
    """A running single-node SLURM; yields the environment its clients (sbatch, squeue) need, its
    private folder and the daemons' logs."""
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
    # The cluster's own GPU lock folder: its node's "GPU 0" (the GRES, so CUDA_VISIBLE_DEVICES=0 in a
    # job) is another node's than the other test module's cluster, though both run on this host;
    # with the host's default folder a job of one cluster waited for the other's to end.
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": f"{shims}:{os.environ['PATH']}",
           "FMNIST_GPU_LOCK_DIR": str(base / "gpu-locks")}
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


def snakemake_call(cluster: dict, *args: str, cache_dir: Path) -> tuple[list[str], dict]:
    """The command and environment of a Snakemake run of the test workflow on `cluster`, through the
    test profile (test_cluster_profile), planned from the throughput cache in `cache_dir`."""
    env = {**cluster["env"], "PYTHONPATH": str(REPO / "src"), "FMNIST_CACHE_DIR": str(cache_dir)}
    cmd = [SNAKEMAKE, "--workflow-profile", "profiles/test-slurm", "--configfile", "test.yaml", *args]
    return cmd, env


def run_snakemake(root: Path, cluster: dict, *args: str, cache_dir: Path) -> tuple[str, float]:
    cmd, env = snakemake_call(cluster, *args, cache_dir=cache_dir)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    slurm_logs = "\n".join(
        f"--- {p}:\n{p.read_text()[-1500:]}" for p in sorted((root / ".snakemake").glob("slurm_logs/**/*.log"))
    )
    assert proc.returncode == 0, f"snakemake on SLURM failed:\n{out[-6000:]}\n{slurm_logs}"
    return out, seconds


@contextlib.contextmanager
def snakemake_running(root: Path, cluster: dict, *args: str, cache_dir: Path):
    """Snakemake (snakemake_call) started in `root` in the background, its output to
    `root`/snakemake.out (a file, not a pipe: nobody reads a pipe while the test waits), killed if
    still running when the block ends."""
    cmd, env = snakemake_call(cluster, *args, cache_dir=cache_dir)
    with (root / "snakemake.out").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def planned(root: Path, cache_dir: Path, **figures) -> dict[str, dict]:
    """The study's runs, with h200 figures written to the plan cache the jobs are sized from."""
    from fmnist import config, experiments, plan

    runs = experiments.expand(config.load(root / "test.yaml"))[0]
    cache = {plan.throughput_key(run, "cuda h200", True): FIGURE for run in runs.values()}
    cache_dir.mkdir(parents=True, exist_ok=True)
    plan.save_cache(cache, cache_dir / "throughput.json")
    return runs


"""What the benchmarks share: default files, the data check, one resolved run, a timed step loop,
the environment of a child process and a workflow run in a scratch folder."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fmnist.config import REPO_ROOT, ConfigError

DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
SPEEDRUN_CONFIG = REPO_ROOT / "config" / "speedrun.yaml"
FULL_CONFIG = REPO_ROOT / "config" / "full.yaml"
DEFAULT_DATA = Path("data/prepared/fashion_mnist.npz")


def check_data(path: Path | str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"no prepared data at {path}: run `python -m fmnist download && python -m fmnist prepare` "
            "(or `snakemake --cores 1 data/prepared/fashion_mnist.npz`), or pass --data"
        )
    return path


def resolve_one(configfile: Path | str, model: str, augmentation: str, seed: int = 0,
                train: dict | None = None) -> dict:
    """The resolved run (model, augmentation, `default` setting, seed) of a config, with `train` overrides."""
    from fmnist import config, experiments

    cfg = config.load(configfile)
    cfg["defaults"] = config.deep_merge(cfg.get("defaults", {}), train or {})
    cfg["studies"] = {"bench": {"models": [model], "augmentations": [augmentation],
                                "settings": ["default"], "seeds": [seed]}}
    runs, _ = experiments.expand(cfg)
    return next(iter(runs.values()))


def ms_per_step(step, warmup: int, n_steps: int, dev) -> float:
    """Milliseconds per call of `step(i)` over steps warmup .. warmup + n_steps - 1, after the warm-up
    steps 0 .. warmup - 1; CUDA synchronised before and after the timed steps."""
    import torch

    for i in range(warmup):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(warmup, warmup + n_steps):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n_steps * 1000


def run_workflow(workdir: Path, configfile: Path | str, cores: int, targets: list[str], config: list[str],
                 resources: list[str], timeout: float) -> tuple[float, str]:
    """Run this checkout's workflow on `configfile` in `workdir`; (seconds, the end of its log). On a
    timeout the whole process group goes (Snakemake and every job it started: `run_bounded`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", *targets, "-s", str(REPO_ROOT / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(Path(configfile).resolve()), "--cores", str(cores),
           "--resources", *resources, *snakemake_scheduler(), "--config", *config]
    env = {**child_env(), "SNAKEMAKE_OUTPUT_CACHE": str(workdir.resolve() / "cache")}
    rc, seconds, output = run_bounded(cmd, timeout, env)
    if rc is None:
        # the reason first: a long command line must not push it out of a shortened message
        raise RuntimeError(f"the workflow ran past the bench's budget ({timeout:.0f}s left); its process "
                           f"group was killed: `{' '.join(cmd)}`\n{output[-1500:]}")
    if rc != 0:
        raise RuntimeError(f"the workflow failed: `{' '.join(cmd)}`\n{output[-3000:]}")
    return seconds, output[-2000:]


def snakemake_scheduler() -> list[str]:
    """`--scheduler greedy` where `pulp` (Snakemake's ILP scheduler) is not installed (a bare GPU host
    with the carried wheels: docs/performance.md, GPUs), else nothing."""
    import importlib.util

    return [] if importlib.util.find_spec("pulp") else ["--scheduler", "greedy"]


def run_bounded(cmd: list[str], timeout: float, env: dict[str, str] | None = None,
                grace: float = 5.0) -> tuple[int | None, float, str]:
    """Run `cmd` in a session of its own for at most `timeout` seconds: (exit code, or None when it ran
    out of time; seconds; stdout and stderr). On the timeout the whole process group is sent SIGTERM,
    then SIGKILL after `grace` seconds, so no job it started (a training process on the GPU) outlives it
    and loads the machine for what is measured next."""
    with tempfile.TemporaryFile("w+") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            rc = None
            kill_group(proc, grace)
        seconds = time.perf_counter() - t0
        log.seek(0)
        return rc, seconds, log.read()


def kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM to `proc`'s whole process group (it leads its own session), then, after at most `grace`
    seconds for the leader to end, SIGKILL to whatever of the group is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)


def child_env() -> dict[str, str]:
    """This process's environment with this checkout's `src` first on PYTHONPATH (child processes
    import the code being measured, not an installed copy)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}


def configure_device(device: str, threads: int):
    """torch's threads and the device, with the trainer's backend flags (runtime.configure_backends)."""
    import torch

    from fmnist import runtime

    torch.set_num_threads(threads)
    dev = runtime.select_device(device)
    runtime.configure_backends(dev)
    return dev

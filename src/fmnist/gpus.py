"""Which device a job trains on and which GPU it takes, without importing torch (numerics: fmnist.amp).

Snakemake reads this module while it parses (a few milliseconds: no torch), and every training and
feature job calls `acquire` before it imports torch, so `CUDA_VISIBLE_DEVICES` is set in time.

The packing model (docs/performance.md, "GPUs"):
- the user counts GPUs (`--resources gpu=G`); the workflow turns that into `gpu_slots = G x S`, where
  S is the jobs-per-GPU cap (config `gpu_slots`, default `DEFAULT_SLOTS`);
- each GPU's memory is cut into S equal slots; a job asks as many slots as its planned GPU memory
  needs (`slots_for`), at least one, at most S (the GPU to itself), so the jobs on a GPU never ask
  for more memory than it has;
- a job holds its slots by `fcntl.flock` on one lock file per (GPU, slot) in a lock directory: the
  kernel drops the locks when the process ends, however it ends (finished, killed, failed), so a
  slot is never leaked.

Reports A-E each trained one model at a time on one GPU and left this out; what was chosen here is
whole processes side by side (no fused seeds).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fmnist import amp
from fmnist import config as fmnist_config

DEFAULT_SLOTS = 12
"""Jobs side by side on one GPU. On an H200, 12 default-study runs side by side took the study from
~250 s (one at a time) to 42 s, and 24 B-recipe runs reached 87% SM utilisation (docs/performance.md)."""
DEFAULT_GPU_MEM_MB = 16_000
"""Per-GPU memory assumed when none is configured and nvidia-smi reports none (a small GPU)."""
CUDA_CONTEXT_MB = 600
"""What each process pays on a GPU before its first tensor: the CUDA context and cuDNN/cuBLAS handles."""
FEATURE_JOB_MB = 4_000
"""Planned GPU memory of a feature job: a pretrained backbone's inference on batches of 200."""
LOCK_DIR = ".snakemake/fmnist-gpu-slots"
PLACEMENT_ENV = "FMNIST_GPU_PLACEMENT"
"""Set by the workflow for its jobs: the GPUs, slots per GPU and lock directory (JSON). Not a param, so
where a run trained never changes its identity or its cache entry."""
SLOTS_ENV = "FMNIST_GPU_SLOT"


# ---------------------------------------------------------------------------------------------
# the device a job trains on
# ---------------------------------------------------------------------------------------------

def target_kind(device: str) -> str:
    """`cuda`, `mps` or `cpu`: what a job with config `device` trains on, found without torch."""
    if device.startswith("cuda"):
        return "cuda"
    if device == "auto":
        return "cuda" if fmnist_config.nvidia_gpu_present() else "cpu"  # mps: see amp.resolve_amp
    return device


def job_target(config: dict) -> str:
    """What the jobs of a validated config train on: a cluster run that names its nodes' GPU
    (`plan_device`) trains there, whatever the submitting host has; else `target_kind(device)`."""
    if config.get("plan_device") and config["device"] != "cpu":
        return "cuda"
    return target_kind(config["device"])


def expand_for_jobs(cfg: dict) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """`experiments.expand(cfg)` with `amp: auto` resolved for the device the jobs train on: the runs
    exactly as the workflow hands them to its jobs and as their metrics.json records them. The one
    place that pairs the two, for the workflow, `fmnist status` and `fmnist export`."""
    from fmnist import experiments

    runs, studies = experiments.expand(cfg)
    return amp.resolve_runs_amp(runs, job_target(cfg)), studies


# ---------------------------------------------------------------------------------------------
# packing: how many slots a job asks for
# ---------------------------------------------------------------------------------------------

def visible_gpus() -> list[tuple[str, int]]:
    """(id, memory MB) of each GPU this process may use: nvidia-smi's list, narrowed to
    CUDA_VISIBLE_DEVICES when that is set; [] without nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if not smi or not fmnist_config.nvidia_gpu_present():
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        index, mem = (x.strip() for x in line.split(","))
        gpus.append((index, int(float(mem))))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        wanted = [v.strip() for v in visible.split(",") if v.strip()]
        by_id = dict(gpus)
        gpus = [(v, by_id.get(v, gpus[0][1] if gpus else DEFAULT_GPU_MEM_MB)) for v in wanted]
    return gpus


def slots_for(job_mem_mb: float, gpu_mem_mb: float, slots: int) -> int:
    """Slots of a GPU with `gpu_mem_mb` cut into `slots` that a job needing `job_mem_mb` asks for:
    enough that their share of the memory holds the job, at least 1, at most all (the GPU to itself)."""
    if slots < 1:
        raise ValueError("a GPU has at least one slot")
    share = gpu_mem_mb / slots
    return max(1, min(slots, math.ceil(job_mem_mb / share)))


@dataclass(frozen=True)
class Packing:
    """How the workflow packs jobs onto GPUs: devices (ids, each with its memory) and slots per GPU."""

    devices: tuple[str, ...]
    memory_mb: int
    slots: int

    @property
    def total_slots(self) -> int:
        return len(self.devices) * self.slots

    def job_slots(self, job_mem_mb: float) -> int:
        return slots_for(job_mem_mb + CUDA_CONTEXT_MB, self.memory_mb, self.slots)


def packing(config: dict, gpus_asked: int | None, inventory: Sequence[tuple[str, int]] | None = None) -> Packing:
    """The packing of a validated `config` when the user asked for `gpus_asked` GPUs (`--resources
    gpu=N`; None: every GPU found). Devices: config `gpu_devices`, else the GPUs found, first
    `gpus_asked` of them; memory: config `gpu_memory_mb`, else the smallest GPU's."""
    found = list(visible_gpus() if inventory is None else inventory)
    devices = [str(d) for d in config["gpu_devices"]] if config["gpu_devices"] else [d for d, _ in found]
    if gpus_asked is not None:
        devices = devices[:max(0, int(gpus_asked))]
    memory = config["gpu_memory_mb"] or min((m for _, m in found), default=DEFAULT_GPU_MEM_MB)
    slots = int(config["gpu_slots"] or DEFAULT_SLOTS)
    return Packing(tuple(devices), int(memory), slots)


# ---------------------------------------------------------------------------------------------
# assignment: a job takes slots on one GPU, held by file locks
# ---------------------------------------------------------------------------------------------

@dataclass
class Assignment:
    """Slots held on one GPU; the locks go with the open files (closed by `release` or by process death)."""

    device: str
    slots: list[int]
    files: list = field(default_factory=list, repr=False)

    def release(self) -> None:
        for fh in self.files:
            fh.close()  # closing the file drops its flock
        self.files.clear()


def _try_slots(lock_dir: Path, device: str, slots: int, want: int) -> Assignment | None:
    held = Assignment(device, [])
    for slot in range(slots):
        fh = open(lock_dir / f"gpu{device}.slot{slot}.lock", "a")  # noqa: SIM115 - kept open while held
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        held.slots.append(slot)
        held.files.append(fh)
        if len(held.slots) == want:
            return held
    held.release()
    return None


def acquire(lock_dir: Path | str, devices: Sequence[str], slots: int, want: int, *,
            timeout: float | None = None, poll: float = 0.2,
            log: Callable[[str], None] | None = None) -> Assignment:
    """Take `want` free slots of one GPU among `devices` (each cut into `slots`), waiting while none
    has room; the GPU with the most free slots first, so jobs spread over GPUs before they pack.

    Snakemake's `gpu_slots` resource keeps the total in bounds; waiting happens only when the free
    slots are split over GPUs so that none has `want` (or when another workflow uses the same GPUs).
    """
    if not devices:
        raise fmnist_config.ConfigError(
            "no GPU to assign: none found (nvidia-smi) and config gpu_devices is empty; "
            "set gpu_devices, or device: cpu"
        )
    want = max(1, min(int(want), int(slots)))
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    start, said = time.monotonic(), False
    while True:
        order = sorted(devices, key=lambda d: -_free_slots(lock_dir, d, slots))
        for device in order:
            got = _try_slots(lock_dir, device, slots, want)
            if got is not None:
                return got
        if timeout is not None and time.monotonic() - start > timeout:
            raise TimeoutError(f"no GPU had {want} free slot(s) within {timeout:.0f}s (locks in {lock_dir})")
        if log and not said:
            log(f"waiting for {want} free slot(s) on one of GPUs {', '.join(devices)}")
            said = True
        time.sleep(poll)


def _free_slots(lock_dir: Path, device: str, slots: int) -> int:
    free = 0
    for slot in range(slots):
        path = lock_dir / f"gpu{device}.slot{slot}.lock"
        with open(path, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            fcntl.flock(fh, fcntl.LOCK_UN)
            free += 1
    return free


def placement_json(p: Packing, lock_dir: Path | str = LOCK_DIR) -> str:
    """What a job needs to place itself: devices, slots per GPU and the lock directory (absolute, one
    per host, so GPU 0 of two machines sharing a file system are two GPUs)."""
    path = Path(lock_dir).resolve() / socket.gethostname()
    return json.dumps({"devices": list(p.devices), "slots": p.slots, "lock_dir": str(path)})


def place_job(want: int, placement: str | None = None,
              log: Callable[[str], None] = print) -> Assignment | None:
    """Place a workflow job that asks `want` GPU slots: take them on one GPU (from `placement`, default
    $FMNIST_GPU_PLACEMENT) and point CUDA_VISIBLE_DEVICES at it, so `cuda` in the job is that GPU.
    None when the job asks no slots. The slots are held until `release` or the process ends."""
    placement = os.environ.get(PLACEMENT_ENV) if placement is None else placement
    if not want or not placement:
        return None
    p = json.loads(placement)
    got = acquire(p["lock_dir"], p["devices"], p["slots"], want, log=log)
    os.environ["CUDA_VISIBLE_DEVICES"] = got.device
    os.environ[SLOTS_ENV] = f"{got.device}:{','.join(map(str, got.slots))}"
    log(f"gpu slot: GPU {got.device}, slot(s) {','.join(map(str, got.slots))} of {p['slots']} "
        f"taken at {time.time():.3f} (pid {os.getpid()}, CUDA_VISIBLE_DEVICES={got.device})")
    return got


def release_job(got: Assignment | None, log: Callable[[str], None] = print) -> None:
    """Give a finished job's slots back (a killed or failed one gives them back by ending)."""
    if got is None:
        return
    got.release()
    log(f"gpu slot: GPU {got.device}, slot(s) {','.join(map(str, got.slots))} released at {time.time():.3f}")

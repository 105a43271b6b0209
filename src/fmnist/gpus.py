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

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
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
# the GPUs of this machine, from nvidia-smi
# ---------------------------------------------------------------------------------------------

SMI_TIMEOUT_S = 20
_UNKNOWN = {"", "n/a", "[n/a]", "[not supported]", "not supported", "[unknown error]", "unknown error",
            "[insufficient permissions]"}
MIG_LINE = re.compile(r"^\s*MIG\s+\d+g\.(\d+)gb\s+Device\s+\d+:\s+\(UUID:\s*(MIG-[^)\s]+)\)", re.MULTILINE)
EXCLUSIVE_MODES = ("exclusive_process", "exclusive_thread")


@dataclass(frozen=True)
class Device:
    """One GPU a job may be placed on: `id` goes into CUDA_VISIBLE_DEVICES (an index, a GPU- or MIG-
    UUID, as given), `key` names its lock files (its UUID where known: the same GPU under every index a
    container or cgroup gives it), `memory_mb` sizes its slots (free memory, not total)."""

    id: str
    memory_mb: int | None = None
    key: str = ""
    compute_mode: str = ""

    @property
    def lock_key(self) -> str:
        return self.key or self.id

    @property
    def exclusive(self) -> bool:
        return self.compute_mode.lower() in EXCLUSIVE_MODES


def _smi(*args: str) -> str | None:
    """nvidia-smi's output for `args`, or None (no nvidia-smi, no GPU, an error or a hang)."""
    smi = shutil.which("nvidia-smi")
    if not smi or not fmnist_config.nvidia_gpu_present():
        return None
    try:
        return subprocess.run([smi, *args], capture_output=True, text=True, timeout=SMI_TIMEOUT_S,
                              check=True).stdout
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return None


def _mb(text: str) -> int | None:
    """A memory field of nvidia-smi in MiB, or None for [N/A], [Not Supported], empty or garbage."""
    text = text.strip()
    if text.lower() in _UNKNOWN:
        return None
    try:
        value = float(text.split()[0])
    except (ValueError, IndexError):
        return None
    return int(value) if math.isfinite(value) and value >= 0 else None


def physical_gpus() -> list[Device]:
    """Every GPU nvidia-smi lists (index, UUID, free or else total memory, compute mode); [] without
    nvidia-smi. Lines that do not parse are skipped, fields that read [N/A] are unknown."""
    out = _smi("--query-gpu=index,uuid,memory.total,memory.free,compute_mode",
               "--format=csv,noheader,nounits")
    found = []
    for line in (out or "").splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 5 or not fields[0].isdigit():
            continue
        index, uuid, total, free, mode = fields
        memory = _mb(free)
        found.append(Device(index, memory if memory is not None else _mb(total),
                            uuid if uuid.startswith("GPU-") else "", "" if mode.lower() in _UNKNOWN else mode))
    return found


def mig_instances() -> dict[str, int]:
    """MIG instance UUID -> its memory MB (from its profile name, `3g.40gb`: 40 GB), by `nvidia-smi -L`."""
    return {uuid: int(gb) * 1000 for gb, uuid in MIG_LINE.findall(_smi("-L") or "")}


def _resolve(entry: str, found: list[Device], migs: dict[str, int]) -> Device:
    """The GPU a CUDA_VISIBLE_DEVICES entry names: an index, a GPU-UUID (or a unique prefix, as CUDA
    takes it) or a MIG-UUID; unknown memory where nvidia-smi does not list it."""
    if entry.isdigit():
        return next((d for d in found if d.id == entry), Device(entry))
    if entry.startswith("GPU-"):
        match = [d for d in found if d.key.startswith(entry)]
        if len(match) == 1:
            return Device(entry, match[0].memory_mb, match[0].key, match[0].compute_mode)
    if entry.startswith("MIG-"):
        match = [u for u in migs if u.startswith(entry)]
        if len(match) == 1:
            return Device(entry, migs[match[0]], match[0])
    return Device(entry, None, entry)


def gpu_inventory() -> list[Device]:
    """The GPUs this process may use: nvidia-smi's list, narrowed to CUDA_VISIBLE_DEVICES when that is
    set (each entry resolved to its GPU or MIG instance); [] without nvidia-smi."""
    found = physical_gpus()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not visible or not found:
        return found
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    migs = mig_instances() if any(v.startswith("MIG-") for v in wanted) else {}
    return [_resolve(v, found, migs) for v in wanted]


def visible_gpus() -> list[tuple[str, int]]:
    """(id, free memory MB) of each GPU this process may use (`gpu_inventory`); a GPU whose memory
    nvidia-smi does not report counts as the smallest known, else DEFAULT_GPU_MEM_MB."""
    inventory = gpu_inventory()
    known = [d.memory_mb for d in inventory if d.memory_mb is not None]
    fallback = min(known, default=DEFAULT_GPU_MEM_MB)
    return [(d.id, d.memory_mb if d.memory_mb is not None else fallback) for d in inventory]


def device_nodes(dev: Path | str = "/dev") -> list[str]:
    """The GPU indices the kernel's /dev/nvidiaN nodes give, for a machine without nvidia-smi."""
    return sorted((p.name[6:] for p in Path(dev).glob("nvidia[0-9]*") if p.name[6:].isdigit()), key=int)


_SAID: set[str] = set()


def say_once(message: str, log: Callable[[str], None] | None = None) -> None:
    """Print `message` (to stderr by default) the first time this process gives it."""
    if message in _SAID:
        return
    _SAID.add(message)
    (log or (lambda m: print(m, file=sys.stderr, flush=True)))(message)


# ---------------------------------------------------------------------------------------------
# packing: how many slots a job asks for
# ---------------------------------------------------------------------------------------------

def slots_for(job_mem_mb: float, gpu_mem_mb: float, slots: int) -> int:
    """Slots of a GPU with `gpu_mem_mb` cut into `slots` that a job needing `job_mem_mb` asks for:
    enough that their share of the memory holds the job, at least 1, at most all (the GPU to itself)."""
    if slots < 1:
        raise ValueError("a GPU has at least one slot")
    share = gpu_mem_mb / slots
    return max(1, min(slots, math.ceil(job_mem_mb / share)))


@dataclass(frozen=True)
class Packing:
    """How the workflow packs jobs onto GPUs: devices (ids, each with its memory) and slots per GPU;
    `keys`: each device's lock name where it differs from its id (its UUID)."""

    devices: tuple[str, ...]
    memory_mb: int
    slots: int
    keys: tuple[tuple[str, str], ...] = ()

    @property
    def total_slots(self) -> int:
        return len(self.devices) * self.slots

    def job_slots(self, job_mem_mb: float) -> int:
        return slots_for(job_mem_mb + CUDA_CONTEXT_MB, self.memory_mb, self.slots)


def packing(config: dict, gpus_asked: int | None, inventory: Sequence[Device | tuple[str, int]] | None = None,
            log: Callable[[str], None] | None = None) -> Packing:
    """The packing of a validated `config` when the user asked for `gpus_asked` GPUs (`--resources
    gpu=N`; None: every GPU found). Devices: config `gpu_devices`, else the GPUs found, first
    `gpus_asked` of them; memory: config `gpu_memory_mb`, else the smallest free memory of those.

    A GPU in Exclusive_Process compute mode takes one process: with one among the devices, each GPU
    takes one job (slots 1), said once."""
    found = [d if isinstance(d, Device) else Device(str(d[0]), d[1])
             for d in (gpu_inventory() if inventory is None else inventory)]
    by_id = {d.id: d for d in found}
    devices = [str(d) for d in config["gpu_devices"]] if config["gpu_devices"] else [d.id for d in found]
    if gpus_asked is not None:
        devices = devices[:max(0, int(gpus_asked))]
    chosen = [by_id.get(d, Device(d)) for d in devices]
    known = [d.memory_mb for d in chosen if d.memory_mb is not None] or [
        d.memory_mb for d in found if d.memory_mb is not None]
    memory = config["gpu_memory_mb"] or min(known, default=DEFAULT_GPU_MEM_MB)
    slots = int(config["gpu_slots"] or DEFAULT_SLOTS)
    exclusive = [d.id for d in chosen if d.exclusive]
    if exclusive and slots > 1:
        say_once(f"GPU {', '.join(exclusive)} in {by_id[exclusive[0]].compute_mode} compute mode: it takes one "
                 "process at a time, so jobs are not packed (one job per GPU, gpu_slots 1); "
                 "`nvidia-smi -c DEFAULT` (as root) allows packing", log)
        slots = 1
    keys = tuple((d.id, d.key) for d in chosen if d.key and d.key != d.id)
    return Packing(tuple(devices), int(memory), slots, keys)


# ---------------------------------------------------------------------------------------------
# assignment: a job takes slots on one GPU (or whole GPUs), held by file locks
# ---------------------------------------------------------------------------------------------

LOCK_DIR_ENV = "FMNIST_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = "/tmp/fmnist-gpu-locks"
"""Where every workflow and every user of a machine keep their GPU locks (world-writable, sticky, as
/tmp itself): two workflows, or two users, then never place a job on a slot the other holds. Set
FMNIST_GPU_LOCK_DIR where /tmp is private to a container or not on a local file system."""
LOCK_DIR = DEFAULT_LOCK_DIR


class GPULockError(fmnist_config.ConfigError):
    """The GPU lock directory cannot be made or locked, with the fix."""


def _lock_fix(path: Path, what: str) -> GPULockError:
    return GPULockError(
        f"GPU placement: {what} ({path}). Set {LOCK_DIR_ENV} to a directory on a local file system that "
        f"every user of this machine's GPUs can write (default {DEFAULT_LOCK_DIR}), e.g. "
        f"export {LOCK_DIR_ENV}=/var/tmp/fmnist-gpu-locks"
    )


def lock_root() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)


def node_lock_dir(root: Path | str | None = None) -> Path:
    """The lock directory of this machine: one per host under the root (the root may be shared)."""
    return Path(root or lock_root()).resolve() / socket.gethostname()


def _shared_dir(path: Path) -> None:
    """Make `path` and its missing parents world-writable with the sticky bit (mode 1777, as /tmp)."""
    missing = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing.append(p)
    for p in reversed(missing):
        try:
            p.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise _lock_fix(p, f"cannot create the lock directory: {exc.strerror}") from None
        with contextlib.suppress(OSError):  # made by another user in the meantime: theirs to open up
            p.chmod(0o1777)
    if not os.access(path, os.W_OK | os.X_OK):
        raise _lock_fix(path, "the lock directory is not writable by this user")


def _open_lock(path: Path):
    """A lock file opened for flock: read-only (flock needs no write access), created mode 0666 when
    missing. An existing file is opened without O_CREAT: Linux's protected_regular refuses O_CREAT on
    another user's file in a sticky directory."""
    while True:
        try:
            return os.fdopen(os.open(path, os.O_RDONLY), "rb")
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _lock_fix(path, f"cannot open a lock file: {exc.strerror}") from None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _lock_fix(path, f"cannot create a lock file: {exc.strerror}") from None
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666)
        return os.fdopen(fd, "rb")


def _flock(fh, mode: int, path: Path | None = None) -> bool:
    """Take `mode` (LOCK_EX, LOCK_SH) on `fh` without waiting: False when another holds it. A file
    system without locks (NFS without lockd, some FUSE mounts) raises an error naming the fix."""
    try:
        fcntl.flock(fh, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        raise _lock_fix(path or Path("."), f"file locks are not supported here: {exc.strerror}") from None
    return True


@dataclass
class Assignment:
    """Slots held on one GPU (or whole GPUs, `slots` empty); the locks go with the open files (closed
    by `release` or by process death)."""

    device: str
    slots: list[int]
    files: list = field(default_factory=list, repr=False)

    def release(self) -> None:
        for fh in self.files:
            fh.close()  # closing the file drops its flock
        self.files.clear()


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


def _gpu_file(lock_dir: Path, key: str) -> Path:
    return lock_dir / f"gpu{_safe(key)}.lock"


def _slot_file(lock_dir: Path, key: str, slot: int) -> Path:
    return lock_dir / f"gpu{_safe(key)}.slot{slot}.lock"


def _try_slots(lock_dir: Path, device: str, slots: int, want: int, key: str | None = None) -> Assignment | None:
    """`want` slots of `device`, with a shared lock on the GPU itself (a whole-GPU job takes it
    exclusively, so it never shares a GPU with packed jobs); None when they are not free."""
    key = key or device
    held = Assignment(device, [])
    gpu = _open_lock(_gpu_file(lock_dir, key))
    if not _flock(gpu, fcntl.LOCK_SH, _gpu_file(lock_dir, key)):
        gpu.close()
        return None
    held.files.append(gpu)
    for slot in range(slots):
        path = _slot_file(lock_dir, key, slot)
        fh = _open_lock(path)
        if not _flock(fh, fcntl.LOCK_EX, path):
            fh.close()
            continue
        held.slots.append(slot)
        held.files.append(fh)
        if len(held.slots) == want:
            return held
    held.release()
    return None


def _lock_dir_ready(lock_dir: Path | str) -> Path:
    lock_dir = Path(lock_dir)
    _shared_dir(lock_dir)
    return lock_dir


def _no_devices() -> fmnist_config.ConfigError:
    return fmnist_config.ConfigError(
        "no GPU to assign: none found (nvidia-smi) and config gpu_devices is empty; "
        "set gpu_devices, or device: cpu"
    )


def acquire(lock_dir: Path | str, devices: Sequence[str], slots: int, want: int, *,
            timeout: float | None = None, poll: float = 0.2, keys: dict[str, str] | None = None,
            log: Callable[[str], None] | None = None) -> Assignment:
    """Take `want` free slots of one GPU among `devices` (each cut into `slots`), waiting while none
    has room; the GPU with the most free slots first, so jobs spread over GPUs before they pack.
    `keys`: the lock name of a device whose id is not its name (its UUID).

    Snakemake's `gpu_slots` resource keeps the total in bounds; waiting happens only when the free
    slots are split over GPUs so that none has `want` (or when another workflow uses the same GPUs).
    """
    if not devices:
        raise _no_devices()
    keys = keys or {}
    want = max(1, min(int(want), int(slots)))
    lock_dir = _lock_dir_ready(lock_dir)
    start, said = time.monotonic(), False
    while True:
        order = sorted(devices, key=lambda d: -_free_slots(lock_dir, keys.get(d, d), slots))
        for device in order:
            got = _try_slots(lock_dir, device, slots, want, keys.get(device, device))
            if got is not None:
                return got
        if timeout is not None and time.monotonic() - start > timeout:
            raise TimeoutError(f"no GPU had {want} free slot(s) within {timeout:.0f}s (locks in {lock_dir})")
        if log and not said:
            log(f"waiting for {want} free slot(s) on one of GPUs {', '.join(devices)}")
            said = True
        time.sleep(poll)


def acquire_whole(lock_dir: Path | str, devices: Sequence[str], want: int, *, timeout: float | None = None,
                  poll: float = 0.2, keys: dict[str, str] | None = None,
                  log: Callable[[str], None] | None = None) -> Assignment:
    """Take `want` whole GPUs among `devices` (no packed job and no other whole-GPU job on them),
    waiting until that many are free: a job of `gpu_per_run: N`, or of a machine whose GPUs are not
    listed for packing. `device` of the result: the GPUs' ids joined by commas."""
    if not devices:
        raise _no_devices()
    keys = keys or {}
    want = max(1, int(want))
    lock_dir = _lock_dir_ready(lock_dir)
    start, said = time.monotonic(), False
    while True:
        held = Assignment("", [])
        taken = []
        for device in devices:
            path = _gpu_file(lock_dir, keys.get(device, device))
            fh = _open_lock(path)
            if _flock(fh, fcntl.LOCK_EX, path):
                held.files.append(fh)
                taken.append(device)
                if len(taken) == want:
                    held.device = ",".join(taken)
                    return held
            else:
                fh.close()
        held.release()
        if want > len(devices):
            raise fmnist_config.ConfigError(
                f"a job asks {want} whole GPUs and this machine lists {len(devices)} ({', '.join(devices)}): "
                "lower gpu_per_run, or list more GPUs"
            )
        if timeout is not None and time.monotonic() - start > timeout:
            raise TimeoutError(f"no {want} free GPU(s) within {timeout:.0f}s (locks in {lock_dir})")
        if log and not said:
            log(f"waiting for {want} free GPU(s) among {', '.join(devices)}")
            said = True
        time.sleep(poll)


def _free_slots(lock_dir: Path, key: str, slots: int) -> int:
    free = 0
    for slot in range(slots):
        path = _slot_file(lock_dir, key, slot)
        with _open_lock(path) as fh:
            if not _flock(fh, fcntl.LOCK_EX, path):
                continue
            fcntl.flock(fh, fcntl.LOCK_UN)
            free += 1
    return free


def placement_json(p: Packing, lock_dir: Path | str | None = None) -> str:
    """What a job needs to place itself: devices, their lock names, slots per GPU and the lock directory
    (absolute, node-wide: `node_lock_dir`, shared by every workflow and user of this machine)."""
    path = node_lock_dir(lock_dir)
    return json.dumps({"devices": list(p.devices), "keys": dict(p.keys), "slots": p.slots, "lock_dir": str(path)})


def whole_gpu_devices(devices: Sequence[str | int] | None = None) -> tuple[list[str], dict[str, str]]:
    """(ids, lock names) of the GPUs a whole-GPU job may take: config `gpu_devices` when given, else
    every GPU this process may use (`gpu_inventory`); without nvidia-smi, CUDA_VISIBLE_DEVICES's
    entries or the kernel's /dev/nvidiaN nodes."""
    inventory = gpu_inventory()
    keys = {d.id: d.lock_key for d in inventory if d.key}
    if devices:
        return [str(d) for d in devices], keys
    if inventory:
        return [d.id for d in inventory], keys
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"], {}
    return device_nodes(), {}


def place_job(want: int, placement: str | None = None, log: Callable[[str], None] = print, *,
              gpus: int = 0, devices: Sequence[str | int] | None = None) -> Assignment | None:
    """Place a workflow job on its GPU(s) and point CUDA_VISIBLE_DEVICES at them, so `cuda` in the
    job is its GPU. Two ways, one lock directory:

    - packed (`want` GPU slots, `placement` default $FMNIST_GPU_PLACEMENT): the slots on one GPU;
    - whole GPUs (`gpus`, the job's `gpu` resource, when it asks no slots: `gpu_per_run`, or a
      machine without nvidia-smi): that many GPUs no other job holds, from `devices` (config
      gpu_devices) or the GPUs found, so `--resources gpu=G` runs G jobs on G GPUs, not on cuda:0.

    None when the job asks for neither (or no GPU can be listed, said). Held until `release` or the
    process ends."""
    placement = os.environ.get(PLACEMENT_ENV) if placement is None else placement
    if want and placement:
        p = json.loads(placement)
        got = acquire(p["lock_dir"], p["devices"], p["slots"], want, keys=p.get("keys"), log=log)
        of = f"of {p['slots']} "
    elif gpus:
        ids, keys = whole_gpu_devices(devices)
        if not ids:
            say_once("gpu placement: no GPU listed (no nvidia-smi, no /dev/nvidiaN, no CUDA_VISIBLE_DEVICES): "
                     "the job runs on the default GPU; set gpu_devices to place jobs", log)
            return None
        got = acquire_whole(node_lock_dir(), ids, gpus, keys={i: keys.get(i, i) for i in ids}, log=log)
        of = ""
    else:
        return None
    os.environ["CUDA_VISIBLE_DEVICES"] = got.device
    slots = ",".join(map(str, got.slots)) or "whole"
    os.environ[SLOTS_ENV] = f"{got.device}:{slots}"
    log(f"gpu slot: GPU {got.device}, slot(s) {slots} {of}taken at {time.time():.3f} "
        f"(pid {os.getpid()}, CUDA_VISIBLE_DEVICES={got.device})")
    return got


def release_job(got: Assignment | None, log: Callable[[str], None] = print) -> None:
    """Give a finished job's slots back (a killed or failed one gives them back by ending)."""
    if got is None:
        return
    got.release()
    log(f"gpu slot: GPU {got.device}, slot(s) {','.join(map(str, got.slots)) or 'whole'} released at {time.time():.3f}")

"""GPU placement on shared machines and clusters, with a fake `nvidia-smi` on PATH: what it prints
([N/A] fields, nothing, garbage, MIG instances, compute modes) and where jobs land (node-wide locks,
whole GPUs for gpu_per_run and machines without nvidia-smi). No GPU needed."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, make_workflow, snakemake, tiny_config

from fmnist import config, gpus

H100 = "GPU-11111111-aaaa-bbbb-cccc-000000000000"
H100B = "GPU-22222222-aaaa-bbbb-cccc-000000000000"
A100 = "GPU-33333333-aaaa-bbbb-cccc-000000000000"
MIG = "MIG-44444444-aaaa-bbbb-cccc-000000000000"

TWO_GPUS = f"0, {H100}, 81559, 30000, Default\n1, {H100B}, 81559, 81000, Default\n"
LIST = textwrap.dedent(f"""\
    GPU 0: NVIDIA H100 80GB HBM3 (UUID: {H100})
    GPU 1: NVIDIA A100-SXM4-80GB (UUID: {A100})
      MIG 3g.40gb     Device  0: (UUID: {MIG})
      MIG 1g.10gb     Device  1: (UUID: MIG-55555555-aaaa-bbbb-cccc-000000000000)
    """)


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    """Install a fake nvidia-smi on PATH; returns a function that sets what it prints."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case "$*" in
          *--query-gpu*) cat {tmp_path}/smi-query ;;
          *-L*) cat {tmp_path}/smi-list ;;
        esac
        exit $(cat {tmp_path}/smi-rc 2>/dev/null || echo 0)
        """))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpus.fmnist_config, "nvidia_gpu_present", lambda: True)
    gpus._SAID.clear()

    def set_output(query: str, listing: str = LIST, rc: int = 0) -> None:
        (tmp_path / "smi-query").write_text(query)
        (tmp_path / "smi-list").write_text(listing)
        (tmp_path / "smi-rc").write_text(str(rc))

    return set_output


@pytest.fixture
def env_copy(monkeypatch):
    """place_job writes os.environ, as a job's process should: here a copy, so nothing leaks."""
    monkeypatch.setattr(os, "environ", dict(os.environ))


def new_job(log=lambda _m: None, **kw) -> gpus.Assignment | None:
    """place_job as a fresh job process calls it: with the workflow's CUDA_VISIBLE_DEVICES, not the one
    an earlier placement in this process wrote."""
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    if "WORKFLOW_CVD" in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = os.environ["WORKFLOW_CVD"]
    return gpus.place_job(0, "", log, **kw)


# --- reading nvidia-smi ----------------------------------------------------------------------------

def test_free_memory_sizes_the_slots_not_total(fake_smi):
    """Another process holds 50 GB of GPU 0: its slots are cut from the 30 GB left."""
    fake_smi(TWO_GPUS)
    assert gpus.visible_gpus() == [("0", 30000), ("1", 81000)]
    p = gpus.packing(config.validate(tiny_config(gpu_slots=10)), None)
    assert p.memory_mb == 30000 and p.devices == ("0", "1")
    assert p.job_slots(2400) == 1 and p.job_slots(3001) == 2  # 3,000 MB a slot, context included


@pytest.mark.parametrize(("query", "expected"), [
    # [N/A] free memory: the total stands in; [N/A] both: the smallest known
    (f"0, {H100}, 81559, [N/A], Default\n1, {H100B}, [N/A], [N/A], [N/A]\n", [("0", 81559), ("1", 81559)]),
    ("", []),  # no output
    ("No devices were found\n", []),
    ("garbage, , ,\n\x00\x01\n0, x, 1, 2\n", []),  # wrong field counts, no index
    (f"0, {H100}, lots, [Not Supported], Default\n", [("0", gpus.DEFAULT_GPU_MEM_MB)]),
    (f"0, {H100}, 81559, 1e400, Default\n", [("0", 81559)]),  # inf is no memory figure
])
def test_nvidia_smi_output_that_does_not_parse_is_guarded(fake_smi, query, expected):
    fake_smi(query)
    assert gpus.visible_gpus() == expected


def test_a_failing_nvidia_smi_lists_no_gpus(fake_smi):
    fake_smi(TWO_GPUS, rc=9)
    assert gpus.visible_gpus() == []


def test_uuid_and_mig_entries_of_cuda_visible_devices_are_resolved(fake_smi, monkeypatch):
    """CUDA takes GPU-UUIDs (or unique prefixes) and MIG-UUIDs in CUDA_VISIBLE_DEVICES: each is sized
    by its own memory (a MIG 3g.40gb slice: 40 GB, not the whole A100's), and locked by its UUID."""
    fake_smi(f"0, {H100}, 81559, 30000, Default\n1, {A100}, 81920, 81000, Default\n")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{H100[:12]},{MIG},1")
    inventory = gpus.gpu_inventory()
    assert [(d.id, d.memory_mb, d.key) for d in inventory] == [
        (H100[:12], 30000, H100), (MIG, 40000, MIG), ("1", 81000, A100)]
    p = gpus.packing(config.validate(tiny_config()), None)
    assert p.memory_mb == 30000 and dict(p.keys) == {H100[:12]: H100, "1": A100}  # a MIG id is its own key


def test_exclusive_process_mode_means_one_job_per_gpu_said_once(fake_smi):
    fake_smi(f"0, {H100}, 81559, 81000, Exclusive_Process\n1, {H100B}, 81559, 81000, Default\n")
    lines = []
    cfg = config.validate(tiny_config(gpu_slots=12))
    for _ in range(3):
        p = gpus.packing(cfg, None, log=lines.append)
        assert p.slots == 1 and p.total_slots == 2
    assert len(lines) == 1 and "Exclusive_Process" in lines[0] and "one job per GPU" in lines[0]
    fake_smi(TWO_GPUS)
    assert gpus.packing(cfg, None, log=lines.append).slots == 12


# --- the lock directory ----------------------------------------------------------------------------

def test_the_lock_directory_is_node_wide_whatever_the_workflow(tmp_path, monkeypatch):
    """Two workflows (two working directories) and two users get one lock directory per machine."""
    p = gpus.Packing(("0",), 80_000, 4)
    places = []
    for cwd in (tmp_path / "a", tmp_path / "b"):
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        places.append(json.loads(gpus.placement_json(p))["lock_dir"])
    assert places[0] == places[1] == str(Path(os.environ[gpus.LOCK_DIR_ENV]).resolve() / os.uname().nodename)
    monkeypatch.delenv(gpus.LOCK_DIR_ENV)
    assert gpus.node_lock_dir() == Path("/tmp/fmnist-gpu-locks").resolve() / os.uname().nodename


def test_a_made_lock_directory_is_world_writable_and_sticky(tmp_path):
    root = tmp_path / "locks" / "host"
    got = gpus.acquire(root, ["0"], 2, 1, timeout=0)
    for d in (root, root.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o1777, oct(d.stat().st_mode)
    for f in root.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666, f
    got.release()


def test_a_lock_file_another_user_made_read_only_still_locks(tmp_path):
    """flock needs no write access: a lock file left 0444 by another user's umask is still usable."""
    gpus.acquire(tmp_path, ["0"], 1, 1, timeout=0).release()
    for f in tmp_path.iterdir():
        f.chmod(0o444)
    assert gpus.acquire(tmp_path, ["0"], 1, 1, timeout=0).slots == [0]


def test_a_file_system_without_locks_is_an_error_that_names_the_fix(tmp_path, monkeypatch):
    def no_locks(fh, mode):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(gpus.fcntl, "flock", no_locks)
    for take in (lambda: gpus.acquire(tmp_path, ["0"], 2, 1, timeout=0),
                 lambda: gpus.acquire_whole(tmp_path, ["0"], 1, timeout=0)):
        with pytest.raises(gpus.GPULockError, match=r"file locks are not supported here: No locks available.*"
                                                    r"Set FMNIST_GPU_LOCK_DIR to a directory on a local file system"):
            take()


def test_an_unwritable_lock_directory_is_an_error_that_names_the_fix(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(gpus.GPULockError, match="cannot create the lock directory.*FMNIST_GPU_LOCK_DIR"):
        gpus.acquire(blocker / "locks", ["0"], 1, 1, timeout=0)


# --- jobs on distinct GPUs in every mode ------------------------------------------------------------

def test_whole_gpu_jobs_land_on_distinct_gpus(fake_smi, env_copy):
    """gpu_per_run: 1 and --resources gpu=2: two jobs, each asks gpu=1 and no slots, on two GPUs (not
    both on cuda:0); a third waits."""
    fake_smi(TWO_GPUS)
    lines = []
    a = new_job(lines.append, gpus=1)
    first = os.environ["CUDA_VISIBLE_DEVICES"]
    b = new_job(lines.append, gpus=1)
    assert {first, os.environ["CUDA_VISIBLE_DEVICES"]} == {"0", "1"}
    assert a.device != b.device and a.slots == b.slots == []
    assert re.search(r"gpu slot: GPU \d, slot\(s\) whole taken at [0-9.]+", lines[0])
    with pytest.raises(TimeoutError):
        gpus.acquire_whole(gpus.node_lock_dir(), ["0", "1"], 1, timeout=0, keys={"0": H100, "1": H100B})
    gpus.release_job(a, log=lines.append)
    assert gpus.acquire_whole(gpus.node_lock_dir(), ["0", "1"], 1, timeout=0,
                              keys={"0": H100, "1": H100B}).device == a.device
    b.release()


def test_a_job_of_two_gpus_takes_two(fake_smi, env_copy):
    fake_smi(TWO_GPUS)
    got = new_job(gpus=2)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1" == got.device
    with pytest.raises(config.ConfigError, match="asks 3 whole GPUs.*lists 2"):
        gpus.acquire_whole(gpus.node_lock_dir(), ["0", "1"], 3, timeout=0)


def test_without_nvidia_smi_jobs_still_land_on_distinct_gpus(tmp_path, monkeypatch, env_copy):
    """No nvidia-smi (a container without it): the GPUs come from CUDA_VISIBLE_DEVICES, or else the
    kernel's /dev/nvidiaN nodes."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi on it
    os.environ["WORKFLOW_CVD"] = "2,3"
    held = [new_job(gpus=1) for _ in range(2)]
    assert sorted(h.device for h in held) == ["2", "3"]
    for h in held:
        h.release()
    os.environ.pop("WORKFLOW_CVD")
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia10"):
        (dev / name).write_text("")
    assert gpus.device_nodes(dev) == ["0", "1", "10"]
    monkeypatch.setattr(gpus, "device_nodes", lambda: ["0", "1"])
    held = [new_job(gpus=1) for _ in range(2)]
    assert sorted(h.device for h in held) == ["0", "1"]


def test_config_gpu_devices_bound_whole_gpu_jobs(fake_smi, env_copy):
    fake_smi(TWO_GPUS)
    got = new_job(gpus=1, devices=[1])
    assert got.device == "1"
    with pytest.raises(TimeoutError):
        gpus.acquire_whole(gpus.node_lock_dir(), ["1"], 1, timeout=0, keys={"1": H100B})


def test_no_listed_gpu_leaves_the_job_where_it_is_and_says_so(tmp_path, monkeypatch, env_copy):
    monkeypatch.setenv("PATH", str(tmp_path))
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    monkeypatch.setattr(gpus, "device_nodes", lambda: [])
    lines = []
    assert new_job(lines.append, gpus=1) is None
    assert "no GPU listed" in lines[0] and "CUDA_VISIBLE_DEVICES" not in os.environ


def test_whole_gpu_and_packed_jobs_never_share_a_gpu(tmp_path):
    """A packed job holds its GPU shared, a whole-GPU job exclusively: another workflow's gpu_per_run
    job does not land on a GPU packed jobs use, nor packed jobs on a GPU a whole job holds."""
    packed = gpus.acquire(tmp_path, ["0"], 4, 1, timeout=0)
    whole = gpus.acquire_whole(tmp_path, ["0", "1"], 1, timeout=0)
    assert whole.device == "1"
    with pytest.raises(TimeoutError):
        gpus.acquire(tmp_path, ["1"], 4, 1, timeout=0)
    assert gpus.acquire(tmp_path, ["0", "1"], 4, 1, timeout=0).device == "0"
    packed.release()
    whole.release()


def test_packed_jobs_lock_by_uuid(tmp_path):
    """The same GPU under two indices (two containers, or a cgroup's renumbering) is one GPU."""
    held = gpus.acquire(tmp_path, ["0"], 1, 1, timeout=0, keys={"0": H100})
    with pytest.raises(TimeoutError):
        gpus.acquire(tmp_path, ["3"], 1, 1, timeout=0, keys={"3": H100})
    assert gpus.acquire(tmp_path, ["0"], 1, 1, timeout=0, keys={"0": H100B}).slots == [0]
    held.release()


HOLD_WHOLE = r"""
import sys, time
from fmnist import gpus
got = gpus.acquire_whole(sys.argv[1], ["0"], 1, timeout=10)
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_process_sees_a_whole_gpu_held(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", HOLD_WHOLE, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError):
            gpus.acquire(tmp_path, ["0"], 2, 1, timeout=0)
        fh = open(tmp_path / "gpu0.lock", "rb")  # noqa: SIM115
        with pytest.raises(BlockingIOError):
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fh.close()
    finally:
        proc.kill()
        proc.wait()


# --- the real workflow --------------------------------------------------------------------------------

SLOT = re.compile(r"gpu slot: GPU (\S+), slot\(s\) (\S+) (?:of \d+ )?(taken|released) at ([0-9.]+)")


@pytest.mark.slow
def test_workflow_with_gpu_per_run_puts_jobs_on_distinct_gpus(tmp_path, fake_smi, monkeypatch):
    """`--config gpu_per_run=1 --resources gpu=2` on a machine with two GPUs: jobs side by side, never
    two on one GPU at once (before, every job trained on cuda:0). Trained on the CPU."""
    fake_smi(TWO_GPUS)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # what makes nvidia_gpu_present true in the jobs
    cfg = tiny_config(
        gpu_per_run=1, defaults={"epochs": 1}, data={"train_limit": 1000, "test_limit": 200},
        studies={"tiny": {"models": ["lenet_like"], "augmentations": ["none"], "seeds": [0, 1, 2, 3]}},
    )
    root = make_workflow(tmp_path / "wf", cfg)
    targets = [f"results/runs/lenet_like.none.default.s{i}/metrics.json" for i in range(4)]
    snakemake(root, *targets, "--cores", "2", "--resources", "gpu=2")
    spans = []
    for log in sorted((root / "logs" / "train").glob("*.log")):
        events = {m.group(3): (m.group(1), m.group(2), float(m.group(4))) for m in SLOT.finditer(log.read_text())}
        assert set(events) == {"taken", "released"}, log.read_text()[-2000:]
        assert events["taken"][1] == "whole"
        spans.append((events["taken"][0], events["taken"][2], events["released"][2]))
    assert len(spans) == 4 and {d for d, *_ in spans} <= {"0", "1"}
    for i, (dev, t0, t1) in enumerate(spans):
        for dev2, u0, u1 in spans[i + 1:]:
            if dev == dev2:
                assert t1 <= u0 or u1 <= t0, spans  # one job at a time on a GPU

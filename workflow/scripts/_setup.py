"""Shared start of every workflow script: import path and log redirection (no Snakemake imports)."""

import sys
from pathlib import Path

# The library beside this workflow (a checkout, or a copy used as a module) comes first; without
# one (the workflow files next to an installed fmnist), the installed package is used.
SRC = Path(__file__).resolve().parents[2] / "src"
if (SRC / "fmnist").is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))


def _excepthook(exc_type, exc, tb):
    """A damaged input file is reported as its one message (file, problem, fix), not as a traceback."""
    if getattr(exc_type, "__name__", "") == "DamagedFileError":
        print(f"fmnist: {exc}", file=sys.stderr, flush=True)
    else:
        sys.__excepthook__(exc_type, exc, tb)


def redirect_output(log_path: str):
    """Send this job's stdout and stderr (prints, warnings, tracebacks) to its log file."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    # Snakemake removes a job's log before it reruns the job; the epochs of an attempt that was killed
    # stay in the resumed run's history.csv (the resume state carries the history).
    fh = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the job
    from fmnist.runfiles import job_header  # the path set above; fmnist status reads this line back

    print(job_header(), file=fh)
    sys.stdout = sys.stderr = fh
    sys.excepthook = _excepthook
    return fh


def start_gpu_job(sm):
    """The start of a job that may take a GPU: its output to its log, then its GPU slots, taken before
    torch is imported (CUDA_VISIBLE_DEVICES set to their GPU), and the device its code names: a placed
    job sees only its GPU, as cuda:0. Returns (slot, device); the job hands the slot back with
    `fmnist.gpus.release_job(slot)`."""
    redirect_output(sm.log[0])
    from fmnist import gpus

    slot = gpus.place_job(
        sm.resources.get("gpu_slots", 0),
        gpus=sm.resources.get("gpu", 0),  # a whole-GPU job (gpu_per_run, no nvidia-smi)
        devices=sm.config.get("gpu_devices"),
    )
    device = "cuda" if slot is not None and sm.params.device.startswith("cuda") else sm.params.device
    return slot, device

"""Runs that survive being killed: the trainer's per-epoch resume state, a Snakemake job killed with
SIGKILL/SIGTERM and rerun, and a second Snakemake refused while the first holds the directory lock."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, SNAKEMAKE, make_workflow, snakemake, tiny_config

from fmnist import config as fconfig
from fmnist import experiments, runfiles, train
from fmnist.runline import result_line

# Fields of metrics.json that measure the machine and the clock, not the model: they may differ
# between runs (`provenance`: when, where and in how many segments the run trained).
TIMING_FIELDS = {"train_seconds", "images_per_second", "peak_memory_mb", "provenance"}
PROCESS_FIELDS = {"resumed_from_epoch"}
"""Fields of metrics.json that tell how the run got there (a resumed run, an uninterrupted one)."""
RUN_ID = "standard_cnn.none.default.s0"


def model_numbers(run_dir: Path) -> tuple[dict, list[dict]]:
    """metrics.json without timings, and history.csv without its seconds column."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in TIMING_FIELDS | PROCESS_FIELDS:
        metrics.pop(key)
    metrics["files"].pop("history.csv")  # its hash covers the per-epoch seconds
    with open(run_dir / "history.csv") as fh:
        history = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]
    return metrics, history


def resolved_run(**train_overrides) -> dict:
    """The tiny study's run on a quarter of its training slice (450 images): a few seconds an epoch."""
    cfg = fconfig.validate(tiny_config(defaults={"train_fraction": 0.25, **train_overrides}))
    runs, _ = experiments.expand(cfg)
    return next(iter(runs.values()))


# Every piece of state a resume must restore: dropout and augmentation RNG (mixup draws), a per-batch
# schedule, EMA weights and its counter, the best state and early-stopping counter (patience 1 with
# plateau-prone settings), and Adam's moments.
RECIPES = {
    "plain": {"epochs": 3},
    "mixup_onecycle_ema": {
        "epochs": 3, "scheduler": {"name": "onecycle"}, "ema": {"enabled": True, "decay": 0.9},
        "early_stopping": {"patience": 1, "monitor": "val_accuracy"},
    },
}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_train_run_resumes_to_identical_numbers(tmp_path, prepared_small, recipe):
    run = resolved_run(**RECIPES[recipe])
    if recipe == "mixup_onecycle_ema":
        run["augmentation"] = {"name": "mixup", "kind": "mixup", "params": {"alpha": 0.4}}
    quiet = {"log": lambda _m: None, "device": "cpu", "threads": 1}
    train.train_run(run, prepared_small, tmp_path / "whole", **quiet)
    with pytest.raises(SystemExit):
        train.train_run(run, prepared_small, tmp_path / "split", stop_after_epochs=2, **quiet)
    state = torch.load(tmp_path / "split" / runfiles.RESUME_FILE, weights_only=True)
    assert state["epoch"] == 2 and not (tmp_path / "split" / "metrics.json").exists()
    lines: list[str] = []
    train.train_run(run, prepared_small, tmp_path / "split", **{**quiet, "log": lines.append})
    assert any("resuming after epoch 2" in line for line in lines), lines
    assert not (tmp_path / "split" / runfiles.RESUME_FILE).exists(), "resume state left behind"
    split = json.loads((tmp_path / "split" / "metrics.json").read_text())
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert (split["resumed_from_epoch"], whole["resumed_from_epoch"]) == (2, None)
    assert result_line(split).endswith("  resumed after epoch 2") and "resumed" not in result_line(whole)
    assert model_numbers(tmp_path / "split") == model_numbers(tmp_path / "whole")
    a = torch.load(tmp_path / "whole" / "model.pt")
    b = torch.load(tmp_path / "split" / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # provenance: the stopped and resumed run trained in two segments, with the pause between them
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())["provenance"]
    split = json.loads((tmp_path / "split" / "metrics.json").read_text())["provenance"]
    assert len(whole["segments"]) == 1 and whole["pauses"] == []
    assert len(split["segments"]) == 2 and len(split["pauses"]) == 1
    first, second = split["segments"]
    assert split["started"] == first["start"] <= first["end"] == split["pauses"][0]["from"]
    assert split["pauses"][0]["to"] == second["start"] <= second["end"] == split["finished"]
    assert split["machine"] and "cores" in split["machine"]


def test_run_killed_after_its_early_stop_resumes_to_the_same_numbers(tmp_path, prepared_small):
    """The window between the resume save of the stopping epoch and metrics.json: a run killed there
    (a retry, `--rerun-incomplete`) must test the weights it stopped on, not train on past its stop."""
    run = resolved_run(epochs=12, early_stopping={"patience": 1, "monitor": "val_accuracy"})
    quiet = {"log": lambda _m: None, "device": "cpu", "threads": 1}
    whole = train.train_run(run, prepared_small, tmp_path / "whole", **quiet)
    stop = whole["epochs_run"]
    assert stop < 12, "the run must stop early for this test to mean anything"
    assert whole["best_epoch"] == stop - 1
    with pytest.raises(SystemExit):  # killed right after the stopping epoch's state was saved
        train.train_run(run, prepared_small, tmp_path / "split", stop_after_epochs=stop, **quiet)
    state = torch.load(tmp_path / "split" / runfiles.RESUME_FILE, weights_only=True)
    assert state["epoch"] == stop and state["bad_epochs"] == 1
    lines: list[str] = []
    train.train_run(run, prepared_small, tmp_path / "split", **{**quiet, "log": lines.append})
    assert any(f"resuming after epoch {stop} " in line for line in lines), lines
    assert not any(f"epoch {stop + 1}/" in line for line in lines), "the resumed run trained past its stop"
    assert any("early stop" in line for line in lines), lines
    assert model_numbers(tmp_path / "split") == model_numbers(tmp_path / "whole")


def test_resume_state_of_another_config_is_ignored(tmp_path, prepared_small):
    quiet = {"device": "cpu", "threads": 1}
    with pytest.raises(SystemExit):
        train.train_run(resolved_run(epochs=2), prepared_small, tmp_path, stop_after_epochs=1,
                        log=lambda _m: None, **quiet)
    lines: list[str] = []
    metrics = train.train_run(resolved_run(epochs=1), prepared_small, tmp_path, log=lines.append, **quiet)
    assert any("belongs to a different config" in line for line in lines)
    assert metrics["epochs_run"] == 1
    assert len(list(tmp_path.glob("resume.pt.unusable-*"))) == 1, "the other config's state was not kept aside"


class Planted:
    """A pickle that runs code when unpickled (weights_only=False would call os.system)."""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _planted(path: Path) -> None:
    obj = Planted()
    obj.marker = path.with_name("code-ran")
    torch.save({"identity": "x", "payload": obj}, path)


DAMAGE = {
    "random_bytes": lambda p: p.write_bytes(os.urandom(5000)),
    "truncated": _truncated,
    "empty": lambda p: p.write_bytes(b""),
    "planted_code": _planted,
    "not_a_state": lambda p: torch.save({"epoch": 3}, p),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_unusable_resume_state_is_moved_aside_and_the_run_starts_over(tmp_path, prepared_small, damage):
    """Never a crash on every retry, never code run from the file: moved aside, logged, epoch 0."""
    quiet = {"device": "cpu", "threads": 1}
    run = resolved_run(epochs=2)
    with pytest.raises(SystemExit):
        train.train_run(run, prepared_small, tmp_path, stop_after_epochs=1, log=lambda _m: None, **quiet)
    resume = tmp_path / runfiles.RESUME_FILE
    DAMAGE[damage](resume)
    lines: list[str] = []
    metrics = train.train_run(run, prepared_small, tmp_path, log=lines.append, **quiet)
    assert metrics["epochs_run"] == 2 and not any("resuming" in line for line in lines)
    assert any("training from epoch 0" in line and str(resume) in line for line in lines), lines
    assert not (tmp_path / "code-ran").exists(), "unpickling the resume file ran code"
    [aside] = tmp_path.glob("resume.pt.unusable-*")
    assert not resume.exists() and (aside.stat().st_size == 0) == (damage == "empty")


# --- Snakemake jobs killed and rerun -------------------------------------------------------------

def start_snakemake(root: Path, *args: str) -> subprocess.Popen:
    """snakemake in its own process group (so the whole job tree can be signalled), output to a file."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = open(root / f"snakemake.{time.monotonic_ns()}.out", "w")  # noqa: SIM115 - closed by the child's exit
    return subprocess.Popen(
        [SNAKEMAKE, "--cores", "2", *args, "--configfile", "test.yaml"],
        cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )


def wait_until(done, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended ({proc.returncode}) before {what}")
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {timeout}s")


def saved_epoch(run_dir: Path) -> int:
    """The last finished epoch in the run's resume state (0 when there is none yet)."""
    path = run_dir / runfiles.RESUME_FILE
    try:
        return torch.load(path, weights_only=True)["epoch"]
    except FileNotFoundError:
        return 0


def kill_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.wait(timeout=60)
    if sig != signal.SIGKILL:  # a graceful stop may leave stragglers: make sure the group is gone
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


EPOCHS = 5  # long enough that the kill lands well before the run would finish
WORKFLOW_TRAIN = {"epochs": EPOCHS, "train_fraction": 0.25}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    root = make_workflow(tmp_path_factory.mktemp("whole"), tiny_config(defaults=WORKFLOW_TRAIN))
    snakemake(root, "--", f"results/runs/{RUN_ID}/metrics.json")
    return root / "results" / "runs" / RUN_ID


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_job_resumes_to_identical_numbers(tmp_path, uninterrupted, sig):
    root = make_workflow(tmp_path / "wf", tiny_config(defaults=WORKFLOW_TRAIN))
    target = f"results/runs/{RUN_ID}/metrics.json"
    log = root / "logs" / "train" / f"{RUN_ID}.log"
    run_dir = root / "results" / "runs" / RUN_ID
    proc = start_snakemake(root, target)
    try:
        wait_until(lambda: saved_epoch(run_dir) >= 2, proc, "resume state after epoch 2")
    finally:
        kill_group(proc, sig)
    killed_at = saved_epoch(run_dir)
    assert 2 <= killed_at < EPOCHS and not (run_dir / "metrics.json").exists()

    if sig == signal.SIGKILL:  # snakemake itself had no chance to release its lock
        snakemake(root, "--unlock")
    # The rerun deletes only declared outputs: resume.pt (not an output) survives and is picked up.
    snakemake(root, "--rerun-incomplete", "--", target)
    text = log.read_text()
    assert f"resuming after epoch {killed_at} " in text, text[-3000:]
    assert not (run_dir / runfiles.RESUME_FILE).exists()
    assert model_numbers(run_dir) == model_numbers(uninterrupted)


@pytest.mark.slow
def test_second_snakemake_is_refused_by_the_lock(tmp_path):
    # 10 fixed epochs: long enough that the first run is still going when the second one has parsed
    root = make_workflow(tmp_path / "wf", tiny_config(defaults={
        "epochs": 10, "train_fraction": 0.25, "early_stopping": {"enabled": False}}))
    target = f"results/runs/{RUN_ID}/metrics.json"
    first = start_snakemake(root, target)
    try:
        # The lock is taken before any job starts; the first run's jobs still take several seconds.
        locks = root / ".snakemake" / "locks"
        wait_until(lambda: locks.is_dir() and any(locks.iterdir()), first, "lock files")
        second = snakemake(root, "--", target, check=False)
        assert first.poll() is None, "the first run ended before the second one started"
        assert second.returncode != 0
        assert "Directory cannot be locked" in second.stdout + second.stderr
        assert first.wait(timeout=300) == 0
    finally:
        if first.poll() is None:
            kill_group(first, signal.SIGKILL)
    metrics = json.loads((root / "results" / "runs" / RUN_ID / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["epochs_run"] == 10
    assert planned_nothing(root, target)


def planned_nothing(root: Path, target: str) -> bool:
    proc = snakemake(root, "-n", "--", target)
    return "Nothing to be done" in proc.stdout + proc.stderr

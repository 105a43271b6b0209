"""SIGTERM (preemption, scancel, a time limit's warning signal): a training run finishes the epoch in
progress within its grace period and saves it, or abandons it at once; either way it exits with
fmnist.train.TERMINATED_EXIT and resumes to the numbers of an uninterrupted run. A pack passes the
signal on to its runs and waits for them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_config
from test_resume import model_numbers, resolved_run

from fmnist import packs, runfiles, train

QUIET = {"log": lambda _m: None, "device": "cpu", "threads": 1}


def test_a_termination_finishes_the_epoch_only_when_it_ends_within_the_grace_period(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(train.time, "monotonic", lambda: now[0])
    stop = train.Termination(grace_s=60)
    stop.check(1, 5, 10, epoch_seconds=500.0)  # no signal: nothing to decide
    assert not stop.requested and stop.finish_epoch is None
    stop.request()
    now[0] += 10
    stop.request()  # a second SIGTERM does not move the deadline
    assert stop.deadline == 1060.0
    # 5 of 10 steps in 20 s: 20 s left x EVAL_MARGIN = 25 s, ending at 1035 <= 1060
    stop.check(1, 5, 10, epoch_seconds=20.0)
    assert stop.finish_epoch is True
    stop.check(1, 9, 10, epoch_seconds=1e6)  # decided once: the epoch goes on
    late = train.Termination(grace_s=60)
    late.request()
    with pytest.raises(train.EpochAbandoned) as why:
        late.check(2, 5, 10, epoch_seconds=50.0)  # 62.5 s left > 50 s to the deadline
    assert (why.value.epoch, why.value.step, why.value.estimate_s) == (2, 5, 62.5)
    first = train.Termination(grace_s=600)
    first.request()
    with pytest.raises(train.EpochAbandoned):  # no step done yet: nothing to lose
        first.check(3, 0, 10, epoch_seconds=0.0)


# The run trains in a process of its own and sends itself SIGTERM at one step of epoch 2: the signal
# lands at the same point every time (the step's own code: Python runs the handler right after).
CHILD = """
import json, os, signal, sys
from fmnist import train
run, data, out, grace = json.loads(sys.argv[1])
real_epoch, real_step, at = train.StepLoop.epoch, train.StepLoop.step, {"epoch": 0, "step": 0}
def epoch(self, train_split, n, *args, **kwargs):
    at.update(epoch=n, step=0)
    return real_epoch(self, train_split, n, *args, **kwargs)
def step(self, *args):
    at["step"] += 1
    if at == {"epoch": 2, "step": 3}:
        os.kill(os.getpid(), signal.SIGTERM)
    return real_step(self, *args)
train.StepLoop.epoch, train.StepLoop.step = epoch, step
train.train_run(run, data, out, device="cpu", threads=1, grace_s=grace)
"""


def train_until_sigterm(run: dict, data: Path, out: Path, grace_s: float) -> subprocess.CompletedProcess:
    """The run in a process of its own, SIGTERM'd at the third step of its epoch 2."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-c", CHILD, json.dumps([run, str(data), str(out), grace_s])],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, prepared_small) -> Path:
    out = tmp_path_factory.mktemp("whole")
    train.train_run(resolved_run(epochs=3), prepared_small, out, **QUIET)
    return out


@pytest.mark.parametrize(("grace_s", "saved", "said"), [
    (0, 1, r"SIGTERM: stopping at epoch 2, step \d+ of \d+: the epoch would not end within the 0s grace period"),
    (600, 2, r"SIGTERM: epoch 2 finished within the 600s grace period and is saved"),
])
def test_a_sigtermed_run_exits_failed_and_resumes_to_the_same_numbers(tmp_path, prepared_small, whole,
                                                                     grace_s, saved, said):
    run = resolved_run(epochs=3)
    proc = train_until_sigterm(run, prepared_small, tmp_path, grace_s)
    assert proc.returncode == train.TERMINATED_EXIT == 143, proc.stdout + proc.stderr
    assert re.search(said, proc.stdout), proc.stdout
    assert f"the run resumes after epoch {saved}" in proc.stdout
    state = torch.load(tmp_path / runfiles.RESUME_FILE, weights_only=True)
    assert state["epoch"] == saved and not (tmp_path / "metrics.json").exists()
    lines: list[str] = []
    train.train_run(run, prepared_small, tmp_path, **{**QUIET, "log": lines.append})
    assert any(f"resuming after epoch {saved}" in line for line in lines), lines
    assert model_numbers(tmp_path) == model_numbers(whole)


def test_a_sigtermed_pack_passes_the_signal_to_its_runs_and_waits_for_them(tmp_path, prepared_small):
    from fmnist import config as fconfig
    from fmnist import experiments

    cfg = fconfig.validate(tiny_config(defaults={"epochs": 50}))
    run = next(iter(experiments.expand(cfg)[0].values()))
    job = {"id": run["id"], "run": fconfig.canonical_json(run), "data": str(prepared_small),
           "features": None, "device": "cpu", "max_steps": None, "stamp": "s", "grace_s": 0}
    (tmp_path / "jobs.json").write_text(json.dumps([job]))
    code = ("import json, sys; from fmnist import packs; "
            "packs.run_pack(json.load(open('jobs.json')), threads=1, log=lambda m: print(m, flush=True))")
    env = {**os.environ, "PYTHONPATH": str(Path(packs.__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    child = int(re.search(r"started \(pid (\d+)\)", parent.stdout.readline()).group(1))
    log = tmp_path / packs.LOG_DIR / f"{run['id']}.log"
    for _ in range(600):  # until the run trains: its handler is installed
        if "steps of" in (log.read_text() if log.exists() else ""):
            break
        time.sleep(0.1)
    parent.send_signal(signal.SIGTERM)
    out, _ = parent.communicate(timeout=120)
    assert parent.returncode != 0, out
    assert "SIGTERM: passed on to 1 running runs" in out
    assert f"FAILED (exit code {train.TERMINATED_EXIT})" in out  # the run stopped on the signal, awaited
    assert "stopped before they finished" in out and "resumes each after its last saved epoch" in out
    assert "SIGTERM: stopping at epoch 1" in log.read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)

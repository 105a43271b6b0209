"""Progress a person can follow: the result line each finished training job prints, and `python -m
fmnist status`, read from the files a real training job leaves (its log, resume.pt, metrics.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SNAKEMAKE, make_workflow, snakemake, tiny_config, write_config

from fmnist import config as fconfig
from fmnist import gpus, status

RUN_ID = "standard_cnn.none.default.s0"


def study(**train) -> dict:
    """The tiny study on a quarter of its training slice: a few seconds an epoch."""
    return fconfig.validate(tiny_config(defaults={"train_fraction": 0.25, **train}))


def train_as_a_job(workdir: Path, cfg: dict, prepared: Path, stop_after: int | None = None) -> subprocess.CompletedProcess:
    """Train the study's run the way the workflow's train job does: the workflow's own log redirection
    (workflow/scripts/_setup.py), then fmnist.train, in a process of its own."""
    runs = gpus.expand_for_jobs(cfg)[0]  # as the workflow hands it to its train job
    run = next(iter(runs.values()))
    (workdir / "run.json").write_text(json.dumps(run))
    code = f"""
import json, sys
sys.path.insert(0, {str(REPO / 'workflow' / 'scripts')!r})
from _setup import redirect_output
redirect_output({str(workdir / 'logs' / 'train' / (run['id'] + '.log'))!r})
from fmnist import train
train.train_run(json.load(open({str(workdir / 'run.json')!r})), {str(prepared)!r},
                {str(workdir / 'results' / 'runs' / run['id'])!r}, device="cpu", threads=1,
                stop_after_epochs={stop_after!r})
"""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)


def one(s: dict) -> dict:
    (row,) = [r for r in s["runs"] if r["run"] == RUN_ID]
    return row


def test_status_follows_a_run_from_waiting_to_finished(tmp_path, prepared_small):
    cfg = study(epochs=3)
    s = status.study_status(cfg, tmp_path)
    assert one(s)["state"] == "waiting" and s["counts"]["waiting"] == 1

    # killed after its first epoch: with no snakemake holding the directory it is interrupted
    proc = train_as_a_job(tmp_path, cfg, prepared_small, stop_after=1)
    assert "stopped after epoch 1" in (tmp_path / "logs" / "train" / f"{RUN_ID}.log").read_text() + proc.stderr
    s = status.study_status(cfg, tmp_path)
    row = one(s)
    assert (row["state"], row["epoch"], row["epochs"]) == ("interrupted", 1, 3)
    log = (tmp_path / "logs" / "train" / f"{RUN_ID}.log").read_text()
    epoch_line = next(line for line in log.splitlines() if " epoch 1/3 " in line)
    val_acc = float(epoch_line.split("val_acc ")[1].split()[0])
    seconds = float(epoch_line.removesuffix(" *").split()[-1].rstrip("s"))
    assert row["val_accuracy"] == pytest.approx(val_acc)
    assert row["remaining_seconds"] == pytest.approx(2 * seconds) and row["estimate_from"] == "history"
    assert "resumes after epoch 1" in row["note"]

    # while a snakemake holds the lock, the same run is running, and the study's ETA is its ETA
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("")
    s = status.study_status(cfg, tmp_path)
    assert one(s)["state"] == "running" and s["eta_seconds"] == pytest.approx(2 * seconds)
    text = status.render(s, "test.yaml")
    assert "epoch   1/3" in text and f"val acc {100 * val_acc:5.2f}%" in text and "study ETA: at most" in text

    # resumed to the end: finished, with the test accuracy of its metrics.json
    proc = train_as_a_job(tmp_path, cfg, prepared_small)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "results" / "runs" / RUN_ID / "metrics.json").read_text())
    s = status.study_status(cfg, tmp_path)
    row = one(s)
    assert (row["state"], row["test_accuracy"], row["epoch"]) == ("finished", metrics["test_accuracy"], 3)
    assert s["counts"]["finished"] == 1 and s["eta_seconds"] == 0
    assert "study done: 1 finished, 0 failed" in status.render(s, "test.yaml")

    # another config's result in the same place (the run cache links the config in effect) is not this one's
    other = study(epochs=4)
    s = status.study_status(other, tmp_path)
    assert (one(s)["state"], one(s)["note"]) == ("waiting", status.STALE_NOTE)
    assert "seed 0" in status.render(s, "test.yaml") and "(1 with another config's result in place" in \
        status.render(s, "test.yaml")
    other = study(epochs=3, batch_size=32)  # same epochs: the log's result line tells it apart
    assert one(status.study_status(other, tmp_path))["state"] == "waiting"


def test_a_run_whose_log_ends_in_a_traceback_is_failed(tmp_path, prepared_small):
    cfg = study(epochs=2)
    train_as_a_job(tmp_path, cfg, prepared_small, stop_after=1)
    log = tmp_path / "logs" / "train" / f"{RUN_ID}.log"
    with log.open("a") as fh:
        fh.write('Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
                 "torch.OutOfMemoryError: CUDA out of memory\n")
    row = one(status.study_status(cfg, tmp_path))
    assert row["state"] == "failed" and row["note"] == "torch.OutOfMemoryError: CUDA out of memory"
    # a new attempt (Snakemake starts the log over, or a resumed job appends its start line) is not failed
    with log.open("a") as fh:
        fh.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} job started (pid 1) ====\n")
    assert one(status.study_status(cfg, tmp_path))["state"] == "interrupted"


def test_a_waiting_run_is_estimated_from_its_finished_seeds(tmp_path, prepared_small):
    cfg = fconfig.validate(tiny_config(defaults={"train_fraction": 0.25, "epochs": 1},
                                       studies={"tiny": {"seeds": [0, 1]}}))
    train_as_a_job(tmp_path, cfg, prepared_small)
    metrics = json.loads((tmp_path / "results" / "runs" / RUN_ID / "metrics.json").read_text())
    s = status.study_status(cfg, tmp_path)
    (waiting,) = [r for r in s["runs"] if r["state"] == "waiting"]
    assert waiting["run"] == "standard_cnn.none.default.s1"
    assert waiting["remaining_seconds"] == metrics["train_seconds"] and waiting["estimate_from"] == "finished seeds"
    line = next(x for x in status.render(s, "t.yaml").splitlines() if x.strip().startswith("standard_cnn.none.default "))
    assert line.split()[1:3] == ["seed", "1"]
    assert f"about {status.format_duration(metrics['train_seconds'])} each (finished seeds)" in line


def test_result_line_names_run_accuracy_epochs_and_time():
    line = status.result_line({"run_id": RUN_ID, "status": "ok", "test_accuracy": 0.91234, "epochs_run": 14,
                               "epochs_max": 40, "tested_epoch": 9, "train_seconds": 281.2})
    assert line == f"fmnist: finished {RUN_ID}  test accuracy  91.23%  epochs 14/40 (tested 9)  4 min 41 s"
    diverged = status.result_line({"run_id": RUN_ID, "status": "diverged", "test_accuracy": None, "epochs_run": 0,
                                   "epochs_max": 40, "tested_epoch": 0, "train_seconds": 3.0})
    assert "n/a" in diverged and diverged.endswith("[diverged]")
    resumed = status.result_line({"run_id": RUN_ID, "status": "ok", "test_accuracy": 0.91234, "epochs_run": 14,
                                  "epochs_max": 40, "tested_epoch": 9, "train_seconds": 281.2,
                                  "resumed_from_epoch": 6})
    assert resumed == line + "  resumed after epoch 6"


@pytest.mark.slow
def test_a_study_prints_one_result_line_per_run_and_status_reports_it_done(tmp_path):
    root = make_workflow(tmp_path / "wf", tiny_config(studies={"tiny": {"seeds": [0, 1]}}))
    # what the workflow calls while it is parsed (common.smk), added here to this copy of it
    with (root / "workflow" / "rules" / "common.smk").open("a") as fh:
        fh.write("\n\nfrom fmnist.cachelog import quiet_cache_messages\n\nquiet_cache_messages()\n")
    proc = snakemake(root)
    out = proc.stdout + proc.stderr
    assert "to cache." not in out and "from cache." not in out  # the run cache is on (profiles/default)
    assert (root / "cache").is_dir() and any((root / "cache").iterdir())
    for seed in (0, 1):
        rid = f"standard_cnn.none.default.s{seed}"
        metrics = json.loads((root / "results" / "runs" / rid / "metrics.json").read_text())
        (line,) = [x for x in out.splitlines() if x.startswith(f"fmnist: finished {rid} ")]
        assert line == status.result_line(metrics)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    st = subprocess.run([sys.executable, "-m", "fmnist", "status", "--configfile", "test.yaml", "--watch"],
                        cwd=root, capture_output=True, text=True, env=env, timeout=120)
    assert st.returncode == 0, st.stderr
    assert "2 runs — 2 finished, 0 running, 0 interrupted, 0 failed, 0 waiting" in st.stdout
    assert "study done: 2 finished, 0 failed" in st.stdout
    write_config(root, tiny_config(studies={"tiny": {"seeds": [0, 1, 2]}}), "more.yaml")
    st = subprocess.run([sys.executable, "-m", "fmnist", "status", "--configfile", "more.yaml", "--json"],
                        cwd=root, capture_output=True, text=True, env=env, timeout=120)
    s = json.loads(st.stdout)
    assert s["counts"] == {"finished": 2, "running": 0, "interrupted": 0, "failed": 0, "waiting": 1}


def test_quiet_cache_messages_silences_snakemakes_cache_lines_only(tmp_path):
    """A real Snakemake with its between-workflow cache: the per-file lines go, a job's result line stays."""
    (tmp_path / "Snakefile").write_text(f"""
import sys
sys.path.insert(0, {str(REPO / "src")!r})
from fmnist.cachelog import quiet_cache_messages
if config.get("quiet"):
    quiet_cache_messages()
rule out:
    output: "out.txt"
    cache: True
    script: "job.py"
""")
    (tmp_path / "job.py").write_text("import sys\nprint(\"the job's own line\", file=sys.stderr)\n"
                                     "open(snakemake.output[0], 'w').write('x')\n")
    env = {**os.environ, "SNAKEMAKE_OUTPUT_CACHE": str(tmp_path / "cache")}
    (tmp_path / "cache").mkdir()

    def run(*extra: str) -> str:
        (tmp_path / "out.txt").unlink(missing_ok=True)
        proc = subprocess.run([SNAKEMAKE, "--cores", "1", "--cache", "out", *extra], cwd=tmp_path,
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout + proc.stderr

    loud = run()
    assert "Moving output file out.txt to cache." in loud and "the job's own line" in loud
    for f in (tmp_path / "cache").iterdir():
        f.unlink()
    quiet = run("--config", "quiet=1")
    assert "the job's own line" in quiet and (tmp_path / "out.txt").exists()
    assert "to cache." not in quiet and "from cache." not in quiet

"""Real Snakemake runs on a slice of the real data: the whole DAG, rerun precision, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from conftest import make_workflow, planned_jobs, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow


def two_run_config(alpha: float = 0.2) -> dict:
    return tiny_config(
        augmentations={"mixup": {"kind": "mixup", "alpha": alpha}},
        studies={"tiny": {"models": ["standard_cnn"], "augmentations": ["none", "mixup"], "seeds": [0]}},
    )


@pytest.fixture(scope="module")
def done(tmp_path_factory, dataset_dir):
    """A workflow directory after one complete run of the two-run tiny study."""
    root = make_workflow(tmp_path_factory.mktemp("wf"), two_run_config())
    snakemake(root)
    return root


def mtimes(root, pattern="results/runs/*/metrics.json"):
    return {p.parent.name: p.stat().st_mtime_ns for p in root.glob(pattern)}


def test_full_run_produces_every_output(done):
    report = (done / "reports/summary.html").read_text()
    for rid in ("standard_cnn.none.default.s0", "standard_cnn.mixup.default.s0"):
        m = json.loads((done / f"results/runs/{rid}/metrics.json").read_text())
        assert m["status"] == "ok" and m["n_train"] == 1800
        assert rid in report
        for f in ("history.csv", "confusion.csv", "model.pt", "curves.png", "confusion.png"):
            assert (done / f"results/runs/{rid}/{f}").stat().st_size > 0
        assert (done / f"logs/train/{rid}.log").read_text().count("epoch ") >= 2
        # The run cache holds the outputs; the run directory links to them (docs/reliability.md).
        assert (done / f"results/runs/{rid}/metrics.json").resolve().parent == done / "cache"
    for f in ("results/runs.csv", "results/experiments.csv", "results/tables/study_tiny.csv"):
        assert (done / f).exists()
    assert "data:image/png;base64," in report and "torch" in report
    assert planned_jobs(done) == {}  # nothing left to do


def test_only_the_changed_run_reruns(done):
    write_config(done, two_run_config(alpha=0.4))
    assert planned_jobs(done) == {"train": 1, "plot_run": 1, "aggregate": 1, "figures": 1, "report": 1, "all": 1}
    before = mtimes(done)
    snakemake(done)
    after = mtimes(done)
    assert after["standard_cnn.none.default.s0"] == before["standard_cnn.none.default.s0"]
    assert after["standard_cnn.mixup.default.s0"] > before["standard_cnn.mixup.default.s0"]
    m = json.loads((done / "results/runs/standard_cnn.mixup.default.s0/metrics.json").read_text())
    assert m["config"]["augmentation"]["params"]["alpha"] == 0.4
    assert planned_jobs(done) == {}


def test_editing_the_template_reruns_only_the_report(done):
    template = done / "src/fmnist/templates/summary.html.j2"
    time.sleep(1)
    template.write_text(template.read_text().replace("</body>", "<p>edited template</p>\n</body>"))
    assert planned_jobs(done) == {"report": 1, "all": 1}
    snakemake(done)
    assert "<p>edited template</p>" in (done / "reports/summary.html").read_text()
    assert planned_jobs(done) == {}


def test_report_target_builds_only_what_it_needs(done):
    (done / "reports/summary.html").unlink()
    assert planned_jobs(done, "reports/summary.html") == {"report": 1}


def test_corrupt_cached_download_is_fetched_again_without_retraining(done):
    raw = done / "data/raw/t10k-labels-idx1-ubyte"
    good = raw.read_bytes()
    raw.write_bytes(good[:100] + b"\x07" + good[101:])
    before = mtimes(done)
    # Parsing has no side effects: a dry-run leaves the corrupt file where it is.
    (done / "reports/summary.html").unlink(missing_ok=True)  # a job to do, so a real run starts
    snakemake(done, "-n")
    assert raw.read_bytes() != good and not list(raw.parent.glob("*.corrupt-*"))
    # A real run with a job to do checks the cache before its first job.
    proc = snakemake(done)
    assert "failed its SHA-256 check" in proc.stderr
    assert raw.read_bytes() == good
    assert len(list(raw.parent.glob("t10k-labels-idx1-ubyte.corrupt-*"))) == 1  # kept, not deleted
    assert mtimes(done) == before  # content pinned by hash: no run retrained
    assert planned_jobs(done) == {}


def test_unknown_model_fails_before_anything_runs_and_keeps_results(done):
    cfg = two_run_config(alpha=0.4)
    cfg["studies"]["tiny"]["models"].append("resnet_9000")
    write_config(done, cfg, "bad.yaml")
    before = mtimes(done)
    proc = snakemake(done, configfile="bad.yaml", check=False)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "unknown model 'resnet_9000'" in err and "standard_cnn" in err and "lenet_like" in err
    assert mtimes(done) == before


def test_schema_error_names_the_key(done):
    cfg = two_run_config()
    cfg["defaults"]["optimizer"] = {"name": "adamm"}
    write_config(done, cfg, "bad.yaml")
    proc = snakemake(done, configfile="bad.yaml", check=False)
    assert proc.returncode != 0
    assert "defaults.optimizer.name: 'adamm' is not allowed; choose one of" in proc.stderr


def test_diverging_run_is_recorded_and_the_dag_completes(tmp_path, dataset_dir):
    cfg = tiny_config(
        settings={"boom": {"optimizer": {"name": "sgd", "lr": 1000.0}}},
        studies={"tiny": {"models": ["standard_cnn"], "settings": ["default", "boom"], "seeds": [0]}},
    )
    root = make_workflow(tmp_path / "wf", cfg)
    snakemake(root)
    m = json.loads((root / "results/runs/standard_cnn.none.boom.s0/metrics.json").read_text())
    assert m["status"] == "diverged"
    report = (root / "reports/summary.html").read_text()
    assert "diverged" in report and "standard_cnn.none.boom.s0" in report


def test_missing_data_source_stops_with_every_source_named(tmp_path, dataset_dir):
    cfg = tiny_config(data={"sources": [str(tmp_path / "nowhere"), "http://127.0.0.1:9/none"], "timeout": 3})
    root = make_workflow(tmp_path / "wf", cfg)
    proc = snakemake(root, check=False)
    assert proc.returncode != 0
    log = "".join(p.read_text() for p in (root / "logs/download").glob("*.log"))
    assert "could not obtain a verified copy" in log and "nowhere" in log and "127.0.0.1:9" in log
    shutil.rmtree(root)


@pytest.mark.slow
def test_a_fresh_checkout_with_the_data_copied_in_trains_its_target_in_one_call(tmp_path):
    """A new clone or worktree with `data/` copied in (as the record's worktrees are made): its
    workflow files are newer than the data. Snakemake reruns a script rule whose script is newer than
    its outputs, and a re-fetch of the raw files used to end the run "done" after the downloads, with
    the requested run never trained (the jobs below `prepare`'s ancient input fell out of the DAG).
    The raw files are pinned by hash, so nothing is fetched again and the run trains in one call."""
    cfg = tiny_config(defaults={"epochs": 1}, studies={
        "tiny": {"models": ["standard_cnn"], "augmentations": ["none"], "seeds": [0, 1]}})
    root = make_workflow(tmp_path / "wf", cfg)
    first, second = (f"results/runs/standard_cnn.none.default.s{s}/metrics.json" for s in (0, 1))
    snakemake(root, first)
    # the fresh checkout: every workflow file written after the data
    later = time.time() + 5
    for path in [root / "Snakefile", *(root / "workflow").rglob("*")]:
        if path.is_file():
            os.utime(path, (later, later))
    proc = snakemake(root, second)
    assert (root / second).is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rule download" not in proc.stdout + proc.stderr, "a verified raw file was fetched again"

"""The report-size benchmark's cheap parts: the synthetic results tree is shaped like the config's
runs, the page renders from it, and what one more run adds to the page keeps the full study's 363
runs under 8 MB (a size, not a timing: the load time is the benchmark's to print)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import REPO

from fmnist import report, reportsize

FULL = REPO / "config" / "full.yaml"


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[int, dict]:
    out = {}
    for n in (4, 12):
        root = tmp_path_factory.mktemp(f"size{n}")
        ctx = reportsize.synthetic_results(root, FULL, limit=n, figures=False)
        page = root / "reports" / "summary.html"
        report.write_report(page, report.TEMPLATE, runs_csv=ctx["runs_csv"], experiments_csv=ctx["experiments_csv"],
                            tables_dir=ctx["tables_dir"], studies=ctx["studies"], run_dir=ctx["run_dir"],
                            figures_dir=ctx["figures_dir"], descriptions=ctx["descriptions"], sweeps=[],
                            config_hash="synthetic", repo=REPO)
        out[n] = {"root": root, "ctx": ctx, "html": page.read_text(encoding="utf-8")}
    return out


def test_synthetic_runs_are_the_configs_own(trees):
    from fmnist import config as fconfig
    from fmnist import experiments

    runs, _ = experiments.expand(fconfig.load(FULL))
    ids = list(runs)[:12]
    table = pd.read_csv(trees[12]["ctx"]["runs_csv"])
    assert sorted(table["run_id"]) == sorted(ids)
    for rid in ids[:3]:
        d = trees[12]["ctx"]["run_dir"] / rid
        m = json.loads((d / "metrics.json").read_text())
        history = pd.read_csv(d / "history.csv")
        assert len(history) == min(int(runs[rid]["train"]["epochs"]), 40) == m["epochs_run"]
        cm = pd.read_csv(d / "confusion.csv", index_col=0)
        assert cm.shape == (10, 10) and (cm.sum(axis=1) == 1000).all()
        assert m["test_accuracy"] == pytest.approx(cm.to_numpy().trace() / 10_000)
    # every run of the page has its detail waiting as text, with its curves and confusion table
    assert trees[12]["html"].count('<script type="text/html" class="detail">') >= 12
    assert trees[12]["html"].count('<svg xmlns="http://www.w3.org/2000/svg"') == 12


def test_a_run_adds_little_enough_for_the_full_study_to_stay_under_8_mb(trees):
    small, large = (len(trees[n]["html"].encode()) for n in (4, 12))
    per_run = (large - small) / 8
    fixed = small - 4 * per_run
    # the study-level figures (left out here) are a few palette PNGs: allow 1 MB for them
    assert fixed + 363 * per_run + 1e6 <= 8e6, (fixed, per_run)
    assert per_run < 15_000, per_run


def test_page_parts_counts_embedded_images():
    html = '<img src="data:image/png;base64,AAAA"><p>text</p><img src="data:image/svg+xml;base64,QQ==">'
    parts = reportsize.page_parts(html)
    assert parts["total"] == len(html) and parts["images"] == len("data:image/png;base64,AAAA") + len(
        "data:image/svg+xml;base64,QQ==")


def test_the_benchmark_command_prints_its_figures(trees, tmp_path):
    """`python -m fmnist.reportsize OUT --reuse --json` on a tree already there: size and, with
    Chromium, the load time (whatever it is)."""
    import shutil
    import subprocess
    import sys

    root = tmp_path / "tree"
    shutil.copytree(trees[4]["root"], root)
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "fmnist.reportsize", str(root), "--configfile", str(FULL),
                           "--limit", "4", "--reuse", "--repeat", "1", "--json"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["runs"] == 4 and result["bytes"] == (root / "reports" / "summary.html").stat().st_size
    if reportsize.chromium():
        assert result["load_seconds"] >= 0

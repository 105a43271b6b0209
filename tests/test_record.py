"""The CPU record (docs/record/cpu/): its tables are what the project's own aggregate code makes of its
committed runs, and a record whose runs and tables disagree is caught."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from fmnist import config as fmnist_config
from fmnist import experiments, record

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "docs" / "record" / "cpu"


def committed_runs() -> list[Path]:
    return sorted((RECORD / "runs").glob("*/metrics.json"))


def record_runs() -> dict:
    """The runs of the record's config (run id -> resolved run), finished or not."""
    runs, _ = experiments.expand(fmnist_config.load(RECORD / "config.yaml"))
    return runs


def test_record_exists_with_its_config_and_runs():
    assert (RECORD / "config.yaml").exists(), "docs/record/cpu/config.yaml is missing"
    assert (RECORD / "published.yaml").exists()
    assert committed_runs(), "the record holds no finished run"
    runs = record_runs()
    for path in committed_runs():
        assert path.parent.name in runs, f"{path.parent.name} is not a run of the record's config"
        assert (path.parent / "history.csv").exists()
        assert not (path.parent / "model.pt").exists(), "model weights stay out of git"
    # The record's config is the repository's record config, so the workflow can go on with it.
    assert (RECORD / "config.yaml").read_text() == (REPO / "config" / "record_cpu.yaml").read_text()


def test_committed_tables_equal_what_the_runs_give():
    assert record.check(RECORD) == []


def test_headline_lists_the_published_figures_the_record_covers():
    published = pd.read_csv(RECORD / "tables" / "published.csv")
    headline = (RECORD / "headline.md").read_text()
    runs = record_runs()
    covered = {experiments.experiment_id(run) for run in runs.values()}
    rows = published[published["experiment"].isin(covered)]
    assert len(rows) >= 10, "the record covers report B's eight and report D's LeNet-like and ResNet10"
    for label in rows["label"]:
        assert label.replace("|", "\\|") in headline


@pytest.fixture()
def record_copy(tmp_path) -> Path:
    dest = tmp_path / "cpu"
    shutil.copytree(RECORD, dest)
    return dest


def test_a_changed_run_is_caught(record_copy):
    path = sorted((record_copy / "runs").glob("*/metrics.json"))[0]
    m = json.loads(path.read_text())
    m["test_accuracy"] = (m.get("test_accuracy") or 0.5) - 0.01
    m["best_val_accuracy"] = (m.get("best_val_accuracy") or 0.5) - 0.01
    path.write_text(json.dumps(m))
    differ = record.check(record_copy)
    assert any(d.startswith("runs.csv") for d in differ), differ


def test_a_removed_run_is_caught(record_copy):
    shutil.rmtree(sorted((record_copy / "runs").glob("*"))[0])
    assert any(d.startswith("runs.csv") for d in record.check(record_copy))


def test_export_adds_finished_runs_and_rebuilds(record_copy, tmp_path):
    """Export from a results tree holding the record's runs gives the same tables (idempotent)."""
    results = tmp_path / "results"
    shutil.copytree(record_copy / "runs", results / "runs")
    out = tmp_path / "again"
    r = record.export(RECORD / "config.yaml", results, out, published=RECORD / "published.yaml")
    assert r["finished"] == len(committed_runs())
    assert (out / "runs.csv").read_text() == (RECORD / "runs.csv").read_text()
    assert (out / "headline.md").read_text() == (RECORD / "headline.md").read_text()


def test_readme_shows_the_records_headline_table():
    block = record.readme_block(REPO / "README.md", "cpu")
    assert block is not None, "README.md lacks the <!-- record:cpu:start/end --> markers"
    assert block.strip() == (RECORD / "headline.md").read_text().strip(), (
        "README's record table is stale: python -m fmnist record export ... --readme README.md"
    )


def test_headline_status_counts_the_records_runs():
    """The status line above the table is computed from runs/, so no README can claim more runs."""
    runs = record_runs()
    first = (RECORD / "headline.md").read_text().splitlines()[0]
    n = len(committed_runs())
    assert f"{n} of {len(runs)} runs finished" in first, first
    assert ("complete" in first) == (n == len(runs)), first
    hours = sum(json.loads(p.read_text())["train_seconds"] for p in committed_runs()) / 3600
    assert f"{hours:.1f} hours of training" in first, first


def test_status_line_says_in_progress_until_every_run_finished():
    assert record.status_line(29, 30, 7200).startswith("**Status: in progress** — 29 of 30 runs finished; 2.0 hours")
    assert record.status_line(30, 30, 0).startswith("**Status: complete** — 30 of 30")


def test_export_updates_every_readme_it_is_given(record_copy, tmp_path):
    from fmnist import cli

    results = tmp_path / "results"
    shutil.copytree(record_copy / "runs", results / "runs")
    shutil.rmtree(sorted((results / "runs").iterdir())[0])  # one run fewer than the record holds
    readmes = [tmp_path / "README.md", tmp_path / "record-README.md"]
    for i, path in enumerate(readmes):
        path.write_text(f"# readme {i}\n\n<!-- record:rec:start -->\nold table\n<!-- record:rec:end -->\n\nrest {i}\n")
    dest = tmp_path / "rec"
    args = ["record", "export", "--configfile", str(RECORD / "config.yaml"), "--results", str(results),
            "--dest", str(dest), "--published", str(RECORD / "published.yaml")]
    assert cli.main(args + [a for p in readmes for a in ("--readme", str(p))]) == 0
    headline = (dest / "headline.md").read_text()
    assert f"{len(committed_runs()) - 1} of 30 runs finished" in headline.splitlines()[0]
    for i, path in enumerate(readmes):
        assert record.readme_block(path, "rec") == headline.strip()
        assert path.read_text().startswith(f"# readme {i}\n") and path.read_text().endswith(f"rest {i}\n")


def test_export_refuses_a_readme_without_markers_before_writing_anything(tmp_path, capsys):
    from fmnist import cli

    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text("<!-- record:rec:start -->\nold\n<!-- record:rec:end -->\n")
    bad.write_text("# no markers\n")
    dest = tmp_path / "rec"
    rc = cli.main(["record", "export", "--configfile", str(RECORD / "config.yaml"), "--results", str(tmp_path),
                   "--dest", str(dest), "--readme", str(good), "--readme", str(bad)])
    assert rc == 2
    assert "bad.md has no <!-- record:rec:start -->" in capsys.readouterr().err
    assert not dest.exists() and "old" in good.read_text()


def test_a_complete_record_holds_the_workflows_report_of_all_its_runs():
    runs = record_runs()
    if len(committed_runs()) < len(runs):
        pytest.skip("the record is in progress: summary.html comes once every run has finished")
    html = (RECORD / "summary.html").read_text()
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())  # the page's text, as a reader sees it
    overview = re.search(r"1\. Overview (\d+) runs \d+ experiments (\d+) ok", text)
    assert overview and overview.groups() == (str(len(runs)), str(len(runs))), (
        "summary.html is not the report of every run finished: export it again with --report")
    for experiment in {experiments.experiment_id(run) for run in runs.values()}:
        assert experiment in html, f"summary.html does not show {experiment}: export it again with --report"

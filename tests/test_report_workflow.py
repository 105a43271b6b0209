"""The report rules in a real (tiny) Snakemake run: summary.html, tables, `--report report.zip`, rerun precision."""

from __future__ import annotations

import shutil
import zipfile

import pytest
from conftest import REPO, make_workflow, planned_jobs, snakemake, tiny_config


@pytest.mark.slow
def test_summary_and_snakemake_report_zip(tmp_path):
    cfg = tiny_config(
        defaults={"epochs": 1},
        # setting b_default: config/published.yaml keys report B's figures to it
        settings={"b_default": {}},
        studies={"tiny": {"models": ["standard_cnn"], "augmentations": ["none", "mixup"], "seeds": [0, 1],
                          "settings": ["b_default"], "description": "two augmentations, two seeds"}},
        report={"sweeps": [{"name": "aug", "study": "tiny", "x": "augmentation.kind"}]},
    )
    root = make_workflow(tmp_path / "wf", cfg)
    # a committed record beside the workflow (its runs table, verdicts and README), found by the report job
    record = root / "docs" / "record" / "cpu"
    (record / "tables").mkdir(parents=True)
    for name in ("runs.csv", "README.md", "tables/published.csv"):
        shutil.copy(REPO / "docs" / "record" / "cpu" / name, record / name)
    snakemake(root, "reports/summary.html")
    html = (root / "reports" / "summary.html").read_text()
    records = html[html.index('<section id="records">'):html.index("</section>", html.index('<section id="records">'))]
    assert "<code>docs/record/cpu</code>" in records and "no committed record" not in records
    assert 'href="../docs/record/cpu/README.md"' in records
    for section in ("overview", "leaderboard", "published", "records", "effects", "tradeoffs", "runs", "dataset", "environment"):
        assert f'<section id="{section}">' in html
    assert "standard_cnn.mixup.b_default.s1" in html
    tables = root / "results" / "tables"
    for name in ("leaderboard", "published", "effects", "study_tiny", "sweep_aug"):
        assert (tables / f"{name}.csv").exists() and (tables / f"{name}.md").exists()
    for fig in ("effects", "pareto", "sweep_aug", "class_distribution", "samples", "augmentations"):
        assert (root / "results" / "figures" / f"{fig}.png").stat().st_size > 5_000
    # config/published.yaml names report B's standard CNN: it ran here, so it has a reproduced value.
    assert "standard_cnn.none.b_default" in (tables / "published.md").read_text()

    # Editing the template reruns only the report.
    template = root / "src" / "fmnist" / "templates" / "summary.html.j2"
    template.write_text(template.read_text().replace("<h1>", "<h1 class=\"t\">", 1))
    assert planned_jobs(root, "reports/summary.html") == {"report": 1}

    snakemake(root, "--report", "report.zip")
    with zipfile.ZipFile(root / "report.zip") as zf:
        names = zf.namelist()
    assert any(n.endswith("report.html") for n in names)
    for fig in ("curves.png", "confusion.png", "effects.png", "pareto.png", "augmentations.png"):
        assert any(n.endswith(fig) for n in names), fig

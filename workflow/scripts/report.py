"""Snakemake entry: render reports/summary.html from the aggregated tables and figures (see fmnist.report)."""

import sys
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import redirect_output  # noqa: E402

redirect_output(snakemake.log[0])  # noqa: F821

from fmnist import integrity, report, smoke  # noqa: E402

sm = snakemake  # noqa: F821
for metrics in sm.input.metrics:  # the report reads each run's metrics and confusion matrix again
    integrity.check_run(Path(metrics).parent, model=False)
template_dir = Path(sm.input.templates[0]).parent
report.write_report(
    sm.output[0],
    template_dir / sm.params.template,
    runs_csv=sm.input.runs,
    experiments_csv=sm.input.experiments,
    tables_dir=sm.input.tables,
    studies=sm.params.studies,
    descriptions=sm.params.descriptions,
    sweeps=sm.params.sweeps,
    figures_dir=Path(sm.input.effects).parent,
    run_dir=Path(sm.input.metrics[0]).parent.parent if sm.input.metrics else "results/runs",
    title=sm.params.title,
    config_hash=sm.params.config_hash,
    repo=Path(sm.scriptdir).resolve().parents[1],  # scriptdir may read workflow/rules/../scripts
)
if sm.params.smoke:
    smoke.mark_report(sm.output[0])

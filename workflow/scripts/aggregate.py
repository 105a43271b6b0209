"""Snakemake entry: per-run metrics -> runs.csv, experiments.csv, per-study tables (see fmnist.aggregate)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import redirect_output  # noqa: E402

redirect_output(snakemake.log[0])  # noqa: F821

from fmnist import aggregate  # noqa: E402

sm = snakemake  # noqa: F821
tables = aggregate.write_all(sm.input.metrics, sm.params.studies, sm.output.runs,
                             sm.output.experiments, sm.output.tables)
print(tables["experiments"].to_string())

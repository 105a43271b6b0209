"""Snakemake entry: per-run metrics -> runs.csv, experiments.csv and results/tables (see fmnist.aggregate)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import redirect_output  # noqa: E402

redirect_output(snakemake.log[0])  # noqa: F821

from fmnist import aggregate, compare, integrity  # noqa: E402

sm = snakemake  # noqa: F821
integrity.check_metrics(sm.input.metrics)  # every damaged metrics.json named in one message
published_file = sm.input.published[0] if sm.input.published else None
published = compare.load_published(published_file)
tables = aggregate.write_all(sm.input.metrics, sm.params.studies, sm.output.runs, sm.output.experiments,
                             sm.output.tables, published=published, sweeps=sm.params.sweeps,
                             baseline=sm.params.baseline, claims=compare.load_effects(published_file))
print(tables["leaderboard"].to_string())

"""Snakemake entry: study-level figures (augmentation effects, Pareto fronts) from the aggregated tables."""

import sys
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import redirect_output  # noqa: E402

redirect_output(snakemake.log[0])  # noqa: F821

from fmnist import plots  # noqa: E402

sm = snakemake  # noqa: F821
plots.effects(Path(sm.input.tables) / "effects.csv", sm.output.effects)
plots.pareto(sm.input.experiments, sm.output.pareto)

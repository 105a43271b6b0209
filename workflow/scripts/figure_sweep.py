"""Snakemake entry: the line plot of one configured sweep (see fmnist.plots.sweep)."""

import sys
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import redirect_output  # noqa: E402

redirect_output(snakemake.log[0])  # noqa: F821

from fmnist import plots  # noqa: E402

sm = snakemake  # noqa: F821
plots.sweep(Path(sm.input.tables) / f"sweep_{sm.wildcards.sweep}.csv", sm.output[0],
            title=sm.params.title, log_x=sm.params.log_x)

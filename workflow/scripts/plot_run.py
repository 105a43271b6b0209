"""Snakemake entry: learning-curve and confusion-matrix PNGs of one run (see fmnist.plots)."""

import sys
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import redirect_output  # noqa: E402

redirect_output(snakemake.log[0])  # noqa: F821

from fmnist import integrity, plots  # noqa: E402

sm = snakemake  # noqa: F821
# The run's four outputs, checked against each other: a damaged or foreign one stops here, named.
m = integrity.check_run(Path(sm.input.metrics).parent)
title = f"{m['run_id']} ({m['status']})"
plots.learning_curves(sm.input.history, sm.output.curves, title=title, best_epoch=m["best_epoch"])
plots.confusion(sm.input.confusion, sm.output.confusion, title=f"{m['run_id']}: test confusion matrix")

"""Snakemake entry: class distribution and per-class sample grid of the prepared data (see fmnist.plots)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import redirect_output  # noqa: E402

redirect_output(snakemake.log[0])  # noqa: F821

from fmnist import plots  # noqa: E402

sm = snakemake  # noqa: F821
plots.class_distribution(sm.input.data, sm.output.distribution)
plots.class_samples(sm.input.data, sm.output.samples)

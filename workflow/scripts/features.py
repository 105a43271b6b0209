"""Snakemake entry: a backbone's features of the train, val and test splits, once per feature set (see fmnist.features)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import redirect_output  # noqa: E402

redirect_output(snakemake.log[0])  # noqa: F821

from fmnist import features  # noqa: E402

sm = snakemake  # noqa: F821
features.compute(sm.params.spec, sm.input.data, sm.output[0], device=sm.params.device, threads=sm.threads)

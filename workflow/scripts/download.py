"""Snakemake entry: fetch one IDX file from the configured sources (see fmnist.fetch.fetch)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import redirect_output  # noqa: E402

redirect_output(snakemake.log[0])  # noqa: F821

from fmnist import fetch  # noqa: E402

fetch.fetch(
    snakemake.wildcards.name,  # noqa: F821
    snakemake.params.sources,  # noqa: F821
    snakemake.output[0],  # noqa: F821
    timeout=snakemake.params.timeout,  # noqa: F821
)

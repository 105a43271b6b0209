"""Snakemake entry: the augmentation gallery (see fmnist.gallery.gallery)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import redirect_output  # noqa: E402

redirect_output(snakemake.log[0])  # noqa: F821

from fmnist import gallery  # noqa: E402

gallery.gallery(snakemake.input.data, snakemake.output[0])  # noqa: F821

"""Snakemake entry: decode the IDX files once into the prepared split file (see fmnist.fetch.prepare)."""

import json
import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import redirect_output  # noqa: E402

redirect_output(snakemake.log[0])  # noqa: F821

from fmnist import fetch  # noqa: E402

p = snakemake.params  # noqa: F821
meta = fetch.prepare(p.raw_dir, snakemake.output[0], p.val_fraction, p.split_seed,  # noqa: F821
                    p.train_limit, p.test_limit)
print(json.dumps(meta, indent=1))

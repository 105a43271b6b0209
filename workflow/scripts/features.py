"""Snakemake entry: a backbone's features of the train, val and test splits, once per feature set (see fmnist.features)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import start_gpu_job  # noqa: E402

# Output to the job's log; before torch is imported, the job's GPU slots (a placed job sees only its
# GPU, as cuda:0).
slot, device = start_gpu_job(snakemake)  # noqa: F821

from fmnist import features, gpus  # noqa: E402

sm = snakemake  # noqa: F821
features.compute(sm.params.spec, sm.input.data, sm.output[0], device=device, threads=sm.threads)
gpus.release_job(slot)

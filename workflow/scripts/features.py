"""Snakemake entry: a backbone's features of the train, val and test splits, once per feature set (see fmnist.features)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import redirect_output  # noqa: E402

redirect_output(snakemake.log[0])  # noqa: F821

from fmnist import gpus  # noqa: E402

# Before torch is imported: the job's GPU slots, and CUDA_VISIBLE_DEVICES set to their GPU.
slot = gpus.place_job(
    snakemake.resources.get("gpu_slots", 0),  # noqa: F821
    gpus=snakemake.resources.get("gpu", 0),  # noqa: F821 - a whole-GPU job (gpu_per_run, no nvidia-smi)
    devices=snakemake.config.get("gpu_devices"),  # noqa: F821
)

from fmnist import features  # noqa: E402

sm = snakemake  # noqa: F821
# a placed job sees only its GPU, as cuda:0
device = "cuda" if slot is not None and sm.params.device.startswith("cuda") else sm.params.device
features.compute(sm.params.spec, sm.input.data, sm.output[0], device=device, threads=sm.threads)
gpus.release_job(slot)

"""Snakemake entry: train one run from its resolved config (see fmnist.train.train_run).

Everything the run prints goes to its log; one result line goes to the terminal, through the stderr
Snakemake passes on (fmnist.runline.result_line)."""

import json
import sys
from pathlib import Path

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

from fmnist import train  # noqa: E402
from fmnist.runline import result_line  # noqa: E402

sm = snakemake  # noqa: F821
# a placed job sees only its GPU, as cuda:0
device = "cuda" if slot is not None and sm.params.device.startswith("cuda") else sm.params.device
result = train.train_run(
    json.loads(sm.params.run),
    sm.input.data,
    Path(sm.output.metrics).parent,
    device=device,
    threads=sm.threads,
    max_steps=sm.params.max_steps,
    features_path=sm.input.get("features"),
    grace_s=sm.config.get("sigterm_grace_s", train.DEFAULT_GRACE_S),  # not a param: no result depends on it
)
print(result_line(result), file=sys.__stderr__, flush=True)
gpus.release_job(slot)

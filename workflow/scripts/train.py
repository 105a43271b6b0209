"""Snakemake entry: train one run from its resolved config (see fmnist.train.train_run).

Everything the run prints goes to its log; one result line goes to the terminal, through the stderr
Snakemake passes on (fmnist.runline.result_line)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import start_gpu_job  # noqa: E402

# Output to the job's log; before torch is imported, the job's GPU slots (a placed job sees only its
# GPU, as cuda:0).
slot, device = start_gpu_job(snakemake)  # noqa: F821

from fmnist import gpus, train  # noqa: E402
from fmnist.runline import result_line  # noqa: E402

sm = snakemake  # noqa: F821
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

"""Snakemake entry: train a pack's runs side by side, one process each (fmnist.packs.run_pack).

The pack's own log says which run started and ended; each run's epochs go to logs/train_pack/<run>.log,
which the run's `train` job copies into logs/train/<run>.log."""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import start_gpu_job  # noqa: E402

# Output to the pack's log; before any run starts, the pack's GPU slots (CUDA_VISIBLE_DEVICES,
# inherited by every run of the pack).
slot, device = start_gpu_job(snakemake)  # noqa: F821

from fmnist import gpus, packs, runcache  # noqa: E402

sm = snakemake  # noqa: F821
jobs = [
    {
        "id": run_id,
        "run": run_json,
        "data": sm.input.data,
        "features": sm.params.features.get(run_id),
        "device": device,
        "max_steps": sm.params.max_steps,
        "stamp": packs.stamp(run_json, sm.params.code[run_id], sm.params.device, sm.params.max_steps),
        "grace_s": sm.config.get("sigterm_grace_s", packs.DEFAULT_GRACE_S),  # not a param: no result depends on it
    }
    for run_id, run_json in sm.params.runs.items()
]
t0 = time.time()
try:
    # runs forced to retrain: exported by the main snakemake's onstart (fmnist.runcache)
    forced = os.environ.get(runcache.RETRAIN_ENV, "")
    retrain = {job["id"] for job in jobs if runcache.is_forced(job["id"], forced)}
    results = packs.run_pack(jobs, threads=sm.params.threads_per_run, retrain=retrain)
finally:
    gpus.release_job(slot)
summary = {"pack": sm.wildcards.pack, "started": t0, "finished": time.time(), "runs": results}
out = Path(sm.output[0])
tmp = out.with_name(f".{out.name}.part")
tmp.write_text(json.dumps(summary, indent=2))
tmp.replace(out)

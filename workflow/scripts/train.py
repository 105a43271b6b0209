"""Snakemake entry: train one run from its resolved config (see fmnist.train.train_run).

Everything the run prints goes to its log; one result line goes to the terminal, through the stderr
Snakemake passes on (fmnist.status.result_line)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import redirect_output  # noqa: E402

redirect_output(snakemake.log[0])  # noqa: F821

from fmnist import train  # noqa: E402
from fmnist.status import result_line  # noqa: E402

sm = snakemake  # noqa: F821
result = train.train_run(
    json.loads(sm.params.run),
    sm.input.data,
    Path(sm.output.metrics).parent,
    device=sm.params.device,
    threads=sm.threads,
    max_steps=sm.params.max_steps,
    features_path=sm.input.get("features"),
)
print(result_line(result), file=sys.__stderr__, flush=True)

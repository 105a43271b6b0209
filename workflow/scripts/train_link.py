"""Snakemake entry of `train` in pack mode (config pack_runs > 1): the run's pack trained it
(fmnist.packs); link its staged result into the run folder, if it was trained from exactly these
params, and its epochs into this job's log. One result line goes to the terminal, as from a train job.

Its code (fmnist.packs) is covered by its input: the pack's summary, whose rule identity holds it."""

import sys
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821
from _setup import redirect_output  # noqa: E402

redirect_output(snakemake.log[0])  # noqa: F821

from fmnist import packs  # noqa: E402
from fmnist.runline import result_line  # noqa: E402

sm = snakemake  # noqa: F821
staged_log = packs.LOG_DIR / f"{sm.wildcards.run}.log"
if staged_log.is_file():
    print(staged_log.read_text(), end="")
expected = packs.stamp(sm.params.run, sm.params.code, sm.params.device, sm.params.max_steps)
metrics = packs.collect(sm.wildcards.run, expected, Path(sm.output.metrics).parent)
print(result_line(metrics), file=sys.__stderr__, flush=True)

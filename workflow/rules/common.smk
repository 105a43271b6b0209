# Config validation (schema defaults filled in), run expansion and path helpers shared by all rules.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # a plain checkout works without `pip install -e`

from fmnist import compare  # noqa: E402
from fmnist import config as fmnist_config  # noqa: E402
from fmnist import data as fmnist_data  # noqa: E402
from fmnist import experiments  # noqa: E402
from fmnist import plan as fmnist_plan  # noqa: E402

try:
    fmnist_config.validate(config)
    RUNS, STUDIES = experiments.expand(config)
    compare.check_report_config(config["report"], STUDIES)
except fmnist_config.ConfigError as exc:
    raise WorkflowError(f"fmnist: {exc}") from None

DATA_DIR = Path(config["data"]["dir"])
RAW_DIR = DATA_DIR / "raw"
PREPARED = str(DATA_DIR / "prepared" / "fashion_mnist.npz")
RUN_DIR = "results/runs/{run}"

# A corrupt file in the download cache is moved aside (never deleted) and fetched again right away.
# The raw files' content is pinned by hash, so a re-fetched file retriggers nothing (see prepare).
fmnist_data.check_cached(
    RAW_DIR,
    log=lambda msg: print(msg, file=sys.stderr),
    refetch_from=config["data"]["sources"],
    timeout=config["data"]["timeout"],
)


def gpu_per_run():
    """The gpu resource of a training job: 1 where the run will train on CUDA."""
    if config["gpu_per_run"] is not None:
        return config["gpu_per_run"]
    device = config["device"]
    if device.startswith("cuda"):
        return 1
    if device == "auto":
        return int(fmnist_config.nvidia_gpu_present())
    return 0


# Measured throughput figures (python -m fmnist plan): read once, never measured while parsing.
COST_CACHE = fmnist_plan.load_cache()


def train_resources(name):
    """A train job's `name` (runtime or mem_mb) from the cost plan's figures, growing with each attempt."""
    return lambda wildcards, attempt: fmnist_plan.resources(RUNS[wildcards.run], config, attempt, COST_CACHE)[name]


def run_config(wildcards):
    return experiments.canonical_json(RUNS[wildcards.run])


def run_files(name):
    return expand(f"{RUN_DIR}/{name}", run=list(RUNS))


wildcard_constraints:
    run="|".join(map(lambda r: r.replace(".", r"\."), RUNS)) or "NO_RUNS",
    name="|".join(fmnist_data.FILES),

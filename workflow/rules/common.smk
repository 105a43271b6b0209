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
from fmnist import features as fmnist_features  # noqa: E402
from fmnist import plan as fmnist_plan  # noqa: E402
from fmnist import smoke as fmnist_smoke  # noqa: E402

try:
    fmnist_smoke.normalise_switch(config)
    fmnist_config.validate(config)
    if config["smoke"]:  # every job for a few steps, in its own tree (fmnist.smoke)
        fmnist_smoke.configure(config)
    RUNS, STUDIES = experiments.expand(config)
    if config["smoke"]:
        RUNS = {rid: fmnist_smoke.shrink_run(run) for rid, run in RUNS.items()}
    compare.check_report_config(config["report"], STUDIES)
except fmnist_config.ConfigError as exc:
    raise WorkflowError(f"fmnist: {exc}") from None

if config["smoke"]:

    workdir: fmnist_smoke.WORKDIR


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


# Head-only transfer runs share one backbone pass per feature set (fmnist.features).
FEATURE_SETS = {}
if config["feature_cache"]:
    for _run in RUNS.values():
        if fmnist_features.cacheable(_run):
            FEATURE_SETS.setdefault(fmnist_features.feature_key(_run), fmnist_features.feature_spec(_run))


def run_features(wildcards):
    """The train job's cached features input, if its run uses them."""
    run = RUNS[wildcards.run]
    if config["feature_cache"] and fmnist_features.cacheable(run):
        return {"features": f"{fmnist_features.FEATURE_DIR}/{fmnist_features.feature_key(run)}.pt"}
    return {}


def run_config(wildcards):
    return experiments.canonical_json(RUNS[wildcards.run])


def run_files(name):
    return expand(f"{RUN_DIR}/{name}", run=list(RUNS))


wildcard_constraints:
    run="|".join(map(lambda r: r.replace(".", r"\."), RUNS)) or "NO_RUNS",
    name="|".join(fmnist_data.FILES),
    feature_set="|".join(map(lambda k: k.replace(".", r"\."), FEATURE_SETS)) or "NO_FEATURE_SETS",

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
from fmnist import integrity as fmnist_integrity  # noqa: E402

try:
    fmnist_config.validate(config)
    RUNS, STUDIES = experiments.expand(config)
    compare.check_report_config(config["report"], STUDIES)
except fmnist_config.ConfigError as exc:
    raise WorkflowError(f"fmnist: {exc}") from None

# The run cache (README, Reliability): profiles/default turns on `--cache`; its store is
# $SNAKEMAKE_OUTPUT_CACHE, by default cache/ in the working directory. Absolute, because Snakemake
# links each run's outputs to their cache entries.
RUN_CACHE = Path(os.environ.setdefault("SNAKEMAKE_OUTPUT_CACHE", str(Path("cache").resolve())))
RUN_CACHE.mkdir(parents=True, exist_ok=True)

# The command a damaged file's fix line names: the one in effect, with its --configfile. Set for
# the jobs to read (not read here, so no `envvars:` assertion applies).
os.environ.update(FMNIST_SNAKEMAKE=" ".join(
    ["snakemake"] + [f"--configfile {os.path.relpath(f)}" for f in workflow.config_settings.configfiles]
))

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
# A damaged prepared file is moved aside the same way; `prepare` then recomputes it.
fmnist_data.check_prepared(PREPARED, log=lambda msg: print(msg, file=sys.stderr))
# Runs whose outputs link to removed cache entries are made missing, so they are rebuilt.
fmnist_integrity.unlink_lost_outputs(
    (RUN_DIR.format(run=r) for r in RUNS), log=lambda msg: print(msg, file=sys.stderr)
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


def run_config(wildcards):
    return experiments.canonical_json(RUNS[wildcards.run])


def run_files(name):
    return expand(f"{RUN_DIR}/{name}", run=list(RUNS))


wildcard_constraints:
    run="|".join(map(lambda r: r.replace(".", r"\."), RUNS)) or "NO_RUNS",
    name="|".join(fmnist_data.FILES),

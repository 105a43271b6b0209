# Glue between Snakemake and fmnist.workflow, which turns the config into the runs, packs, code
# identities and job sizes the rules read; the paths and small input functions all rules share.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The checkout this file belongs to (workflow/rules/common.smk), found from the file itself and never
# from the working directory or the main Snakefile: as a module, those are the consumer's.
WORKFLOW_REPO = Path(str(workflow.current_basedir)).resolve().parents[1]
if (WORKFLOW_REPO / "src" / "fmnist").is_dir():
    sys.path.insert(0, str(WORKFLOW_REPO / "src"))  # a checkout works without `pip install`

# Parsing imports only what Snakemake itself brings (PyYAML, jsonschema): the workflow catalog lints,
# and a `--sdm conda` user starts, in an environment holding Snakemake alone. numpy, pandas and torch
# are imported by the jobs (tests/test_catalog.py parses in such an environment).
from fmnist import cachelog  # noqa: E402
from fmnist import codeid  # noqa: E402
from fmnist import config as fmnist_config  # noqa: E402
from fmnist import devicecheck as fmnist_devicecheck  # noqa: E402
from fmnist import fetch as fmnist_fetch  # noqa: E402
from fmnist import runfiles as fmnist_runfiles  # noqa: E402
from fmnist import features as fmnist_features  # noqa: E402
from fmnist import runcache as fmnist_runcache  # noqa: E402
from fmnist import smoke as fmnist_smoke  # noqa: E402
from fmnist import workflow as fmnist_workflow  # noqa: E402

# The run cache logs 8 "Moving output file ... / Symlinking ..." lines per training job: not shown,
# unless FMNIST_CACHE_MESSAGES is set (the tests read them as evidence of what was trained or restored).
if not os.environ.get("FMNIST_CACHE_MESSAGES"):
    cachelog.quiet_cache_messages()


def workflow_file(path):
    """A relative path as given when it exists in the working directory, else the workflow's own copy."""
    return fmnist_workflow.workflow_file(path, WORKFLOW_REPO)


try:
    RUNS, STUDIES, PUBLISHED = fmnist_workflow.resolve(config, WORKFLOW_REPO)
except fmnist_config.ConfigError as exc:
    raise WorkflowError(f"fmnist: {exc}") from None

if config["smoke"]:

    workdir: fmnist_smoke.WORKDIR


# The run cache (docs/reliability.md): profiles/default turns on `--cache`; its store is
# $SNAKEMAKE_OUTPUT_CACHE, by default cache/ in the working directory (smoke/cache in smoke mode, so
# smoke results never mix with real ones). Absolute, because Snakemake links each run's outputs to
# their cache entries.
RUN_CACHE = Path(os.environ.setdefault("SNAKEMAKE_OUTPUT_CACHE", str(Path("cache").resolve())))

# Only a real execution in the main process writes anything while parsing: `snakemake -n`, `--lint`
# and a cluster job's re-parse change no file.
REAL_RUN = (
    workflow.is_main_process and not workflow.output_settings.dryrun and "--lint" not in sys.argv
)
if REAL_RUN:
    RUN_CACHE.mkdir(parents=True, exist_ok=True)


def log_stderr(msg):
    print(msg, file=sys.stderr)


# The command a damaged file's fix line names: the one in effect, with its --configfile. Set for
# the jobs to read (not read here, so no `envvars:` assertion applies).
os.environ.update(
    FMNIST_SNAKEMAKE=" ".join(
        ["snakemake"]
        + [f"--configfile {os.path.relpath(f)}" for f in workflow.config_settings.configfiles]
    )
)

DATA_DIR = Path(config["data"]["dir"])
RAW_DIR = DATA_DIR / "raw"
PREPARED = str(DATA_DIR / "prepared" / "fashion_mnist.npz")
RUN_DIR = fmnist_workflow.RUN_DIR

# The study's jobs (fmnist.workflow): GPU packing on local GPUs (`--resources gpu=N`; off on a
# cluster's executor), feature sets, training packs, code identities and job sizes. The plan's
# measured figures (python -m fmnist plan) are read once, never measured while parsing.
STUDY = fmnist_workflow.jobs(
    config,
    RUNS,
    local=workflow.local_exec and not workflow.remote_exec,
    gpus_asked=lambda: workflow.global_resources.get("gpu").value,
)
# The packs are cut once, by the submitting Snakemake, which writes them down (a real run); a job (a
# cluster node's, or a local subprocess's, parse) trains the packs written there, never its own cut: a
# node may see another plan cache or host label (fmnist.workflow.PACK_TABLE).
if config["pack_runs"] > 1 and REAL_RUN:
    fmnist_workflow.write_pack_table(STUDY)
elif config["pack_runs"] > 1 and not workflow.is_main_process:
    try:
        said = STUDY.adopt_pack_table(fmnist_workflow.read_pack_table())
    except fmnist_workflow.PackTableError as exc:
        raise WorkflowError(f"fmnist: {exc}") from None
    if said:
        log_stderr(said)
TRAIN_PACKS = STUDY.packs
FEATURE_SETS = STUDY.feature_sets


# Parsing changes no file: `snakemake -n`, `--lint` and each cluster job's re-parse (run with
# --no-hooks) leave the cache alone. A real run that has jobs checks it before the first one starts: a
# corrupt file is moved aside (never deleted) and fetched again. The raw files' content is pinned by
# hash, so a re-fetched file retriggers nothing (see prepare). As a module, call the same function in
# the consumer's onstart.
onstart:
    fmnist_fetch.check_cached(
        RAW_DIR,
        log=log_stderr,
        refetch_from=config["data"]["sources"],
        timeout=config["data"]["timeout"],
    )
    # pack mode: the runs forced to retrain (`--forcerun train_pack`, a pack's summary, --forceall),
    # for the packs' jobs, which would otherwise keep their staged results (fmnist.runcache)
    if TRAIN_PACKS:
        os.environ[fmnist_runcache.RETRAIN_ENV] = fmnist_runcache.retrain_set(
            workflow, RUN_DIR, TRAIN_PACKS
        )


# A real run repairs the prepared file and the run-cache links while parsing (fmnist.workflow.repair).
if REAL_RUN:
    fmnist_workflow.repair(STUDY, PREPARED, RUN_CACHE, log=log_stderr)


def run_features(wildcards):
    """The train job's cached features input, if its run uses them (fmnist.features)."""
    path = STUDY.run_features_path(wildcards.run)
    return {"features": path} if path else {}


def run_config(wildcards):
    # while the DAG is built, when Snakemake knows its executor
    fmnist_devicecheck.check_workflow_device(config, workflow)
    return STUDY.run_json(wildcards.run)


def train_code(wildcards):
    return STUDY.train_code[wildcards.run]


def run_pack_input(wildcards):
    """The train job's pack summary in pack mode (its run is trained there), else nothing."""
    if wildcards.run in STUDY.run_pack:
        return {"pack": STUDY.pack_output(STUDY.run_pack[wildcards.run])}
    return {}


def run_files(name):
    return expand(f"{RUN_DIR}/{name}", run=list(RUNS))


wildcard_constraints:
    run=fmnist_workflow.alternatives(RUNS, "NO_RUNS"),
    pack=fmnist_workflow.alternatives(TRAIN_PACKS, "NO_PACKS"),
    name="|".join(fmnist_fetch.FILES),
    feature_set=fmnist_workflow.alternatives(FEATURE_SETS, "NO_FEATURE_SETS"),


# The image for `--sdm apptainer` (containers/fmnist.def; docs/cluster.md): every rule's script runs
# in it. Ignored without --sdm apptainer.
container: workflow_file("containers/fmnist.sif")

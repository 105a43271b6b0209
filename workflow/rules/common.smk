# Config validation (schema defaults filled in), run expansion, code identities and path helpers shared by all rules.
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
from fmnist import codeid  # noqa: E402
from fmnist import config as fmnist_config  # noqa: E402
from fmnist import data as fmnist_data  # noqa: E402
from fmnist import devicecheck as fmnist_devicecheck  # noqa: E402
from fmnist import features as fmnist_features  # noqa: E402
from fmnist import fetch as fmnist_fetch  # noqa: E402
from fmnist import gpus as fmnist_gpus  # noqa: E402
from fmnist import integrity as fmnist_integrity  # noqa: E402
from fmnist import packs as fmnist_packs  # noqa: E402
from fmnist import plan as fmnist_plan  # noqa: E402
from fmnist import published as fmnist_published  # noqa: E402
from fmnist import runfiles as fmnist_runfiles  # noqa: E402
from fmnist import runcache as fmnist_runcache  # noqa: E402
from fmnist import smoke as fmnist_smoke  # noqa: E402
from fmnist import status as fmnist_status  # noqa: E402

# The run cache logs 8 "Moving output file ... / Symlinking ..." lines per training job: not shown,
# unless FMNIST_CACHE_MESSAGES is set (the tests read them as evidence of what was trained or restored).
if not os.environ.get("FMNIST_CACHE_MESSAGES"):
    fmnist_status.quiet_cache_messages()


def workflow_file(path):
    """A relative path as given when it exists in the working directory, else the workflow's own copy.

    So config/published.yaml is the study's own file when it has one, and the shipped one otherwise
    (a consumer of this workflow as a module has no config/ of its own).
    """
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    own = WORKFLOW_REPO / path
    return str(own) if own.exists() else path


try:
    fmnist_smoke.normalise_switch(config)
    fmnist_config.validate(config)
    # The config keeps the path as written (it is hashed into the report), the rules use the file
    # found (absolute in smoke mode, which changes the working directory).
    PUBLISHED = workflow_file(config["report"]["published"])
    if config["smoke"]:  # every job for a few steps, in its own tree (fmnist.smoke)
        PUBLISHED = os.path.abspath(PUBLISHED) if PUBLISHED else PUBLISHED
        fmnist_smoke.configure(config)
    # `amp: auto` resolved for the device the jobs train on, into each run's config: it is part of the
    # run's identity, so a result never mixes numerics (docs/performance.md, "GPUs")
    RUNS, STUDIES = fmnist_gpus.expand_for_jobs(config)
    if config["smoke"]:
        RUNS = {rid: fmnist_smoke.shrink_run(run) for rid, run in RUNS.items()}
    fmnist_published.check_report_config({**config["report"], "published": PUBLISHED}, STUDIES)
except fmnist_config.ConfigError as exc:
    raise WorkflowError(f"fmnist: {exc}") from None

if config["smoke"]:

    workdir: fmnist_smoke.WORKDIR


# The run cache (README, Reliability): profiles/default turns on `--cache`; its store is
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
RUN_DIR = "results/runs/{run}"


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


# A real run repairs these while parsing (they must be settled before the DAG is built, an onstart is
# too late for that): a damaged prepared file is moved aside (never deleted), so `prepare` recomputes
# it; runs whose outputs link to removed run-cache entries lose those links, so they are restored
# from the cache or retrained.
if REAL_RUN:
    fmnist_data.check_prepared(PREPARED, log=log_stderr)
    # A moved or copied project: its links still name the old place; point them at this cache first.
    fmnist_runcache.relink(
        (RUN_DIR.format(run=r) for r in RUNS), fmnist_runfiles.RUN_OUTPUTS, RUN_CACHE
    )
    fmnist_integrity.unlink_lost_outputs((RUN_DIR.format(run=r) for r in RUNS), log=log_stderr)


# GPUs (docs/performance.md, "GPUs"): what the jobs train on (the runs' amp is resolved for it above).
GPU_TARGET = fmnist_gpus.job_target(config)

# The user counts GPUs (`--resources gpu=N`). Run locally, the workflow packs jobs onto them: it
# registers `gpu_slots` = N x slots per GPU, each GPU job asks the slots its planned memory needs, and
# the job takes them on one GPU by file locks (fmnist.gpus). `gpu_per_run: N` turns packing off: each
# job then asks `gpu=N`, one job per GPU (SLURM gives each job its own GPUs that way).
GPU_PACKING = None
if (
    config["gpu_per_run"] is None
    and (GPU_TARGET == "cuda" or config["gpu_devices"])
    and workflow.local_exec
    and not workflow.remote_exec
):
    GPU_PACKING = fmnist_gpus.packing(config, workflow.global_resources.get("gpu").value)
# No GPU listed (no nvidia-smi, or gpu=0): one job per GPU, by the gpu resource.
if GPU_PACKING is not None and not GPU_PACKING.devices:
    GPU_PACKING = None
if GPU_PACKING is not None:
    if workflow.global_resources.get("gpu_slots").value is None:
        workflow.register_resource("gpu_slots", GPU_PACKING.total_slots)
    os.environ[fmnist_gpus.PLACEMENT_ENV] = fmnist_gpus.placement_json(GPU_PACKING)


def gpu_per_run():
    """The gpu resource of a training job: config gpu_per_run, or 1 where the run trains on CUDA
    unpacked (SLURM, or no packing); 0 when packed (it asks gpu_slots instead)."""
    if config["gpu_per_run"] is not None:
        return config["gpu_per_run"]
    return int(GPU_TARGET == "cuda" and GPU_PACKING is None)


def gpu_slots(kind):
    """The gpu_slots resource of a `kind` (train or features) job: the slots of one GPU its planned
    memory needs (0 without packing)."""
    if GPU_PACKING is None:
        return 0
    if kind == "features":
        return GPU_PACKING.job_slots(fmnist_gpus.FEATURE_JOB_MB)
    return lambda wildcards: run_gpu_slots(wildcards.run)


def run_gpu_slots(run_id):
    """The slots of one GPU a training run's planned memory needs (packing on)."""
    return GPU_PACKING.job_slots(fmnist_plan.gpu_mem_mb(RUNS[run_id], config, COST_CACHE))


# Measured throughput figures (python -m fmnist plan): read once, never measured while parsing.
COST_CACHE = fmnist_plan.load_cache()

# Training jobs grouped for a cluster: `--group-components gpu=N` (profiles/slurm) makes one SLURM job
# of N training runs on one GPU. With the `gpu` resource's scope local and `--resources gpu=1`, the
# group trains them one after another (as the SLURM plugin runs a group's jobs anyway) and asks for the
# sum of their runtimes, the largest of their memory and CPUs, and one GPU. Locally, Snakemake ignores
# groups.
GPU_GROUP = "gpu"


def job_gpus():
    """The gpu resource of a training or features job: 1 wherever training runs on a GPU, also when
    `plan_device` names the GPU of a cluster's nodes and the submitting machine has none."""
    if config["plan_device"] and config["gpu_per_run"] is None and config["device"] != "cpu":
        return 1
    return gpu_per_run()


def train_resources(name):
    """A train job's `name` (runtime or mem_mb) from the cost plan's figures, growing with each attempt."""
    return lambda wildcards, attempt: fmnist_plan.resources(
        RUNS[wildcards.run], config, attempt, COST_CACHE
    )[name]


# Training packs (config pack_runs > 1; fmnist.packs, docs/cluster.md): a `train_pack` job trains its
# runs side by side on its GPU, and each run's `train` job, local, only links the staged result into
# its run folder. This is how one SLURM allocation fills its GPU: the plugin runs the jobs of a group
# one after another. A pack gets one GPU, so it is also cut by the plan's GPU memory figures where one
# GPU's memory is known: in gpu_slots on local GPUs (packing on), in MB where config gpu_memory_mb gives
# a cluster node's GPU. Elsewhere packs are cut by count only, and the submitting Snakemake says so below.
def pack_budget():
    """(each run's need, one GPU's budget) for cutting packs, or (None, None): count only."""
    if GPU_PACKING is not None:
        return {r: run_gpu_slots(r) for r in RUNS}, GPU_PACKING.slots
    if config["gpu_memory_mb"] and job_gpus():
        context = fmnist_gpus.CUDA_CONTEXT_MB
        need = {r: fmnist_plan.gpu_mem_mb(RUNS[r], config, COST_CACHE) + context for r in RUNS}
        return need, config["gpu_memory_mb"]
    return None, None


PACK_NEED, PACK_BUDGET = pack_budget() if config["pack_runs"] > 1 else (None, None)
TRAIN_PACKS = (
    fmnist_packs.packs(RUNS, config["pack_runs"], PACK_NEED, PACK_BUDGET)
    if config["pack_runs"] > 1
    else {}
)
RUN_PACK = {run_id: pack for pack, run_ids in TRAIN_PACKS.items() for run_id in run_ids}


def pack_output(pack):
    return str(fmnist_packs.PACK_DIR / f"{pack}.json")


def run_pack_input(wildcards):
    """The train job's pack summary in pack mode (its run is trained there), else nothing."""
    if wildcards.run in RUN_PACK:
        return {"pack": pack_output(RUN_PACK[wildcards.run])}
    return {}


def pack_features(wildcards):
    """The feature files of a pack's head-only runs."""
    return sorted({run_features_path(r) for r in TRAIN_PACKS[wildcards.pack]} - {None})


def pack_resources(name):
    """A train_pack job's runtime or mem_mb: the sum over its runs of what each would ask alone (side
    by side on one GPU they end no later than one after another; their host memory adds up)."""
    return lambda wildcards, attempt: sum(
        fmnist_plan.resources(RUNS[r], config, attempt, COST_CACHE)[name]
        for r in TRAIN_PACKS[wildcards.pack]
    )


def pack_gpu_slots():
    """Packed locally onto GPUs: a pack asks the slots of its runs together (PACK_NEED), at most one GPU's."""
    if GPU_PACKING is None:
        return 0
    return lambda wildcards: min(
        GPU_PACKING.slots, sum(PACK_NEED[r] for r in TRAIN_PACKS[wildcards.pack])
    )


# Said once, by the submitting Snakemake of a grouped cluster run or one that names plan_device: the runs
# whose jobs get the default resources, and how to measure their figures.
if workflow.is_main_process and (
    config["plan_device"] or GPU_GROUP in workflow.group_settings.group_components
):
    _missing = fmnist_plan.missing_figures_message(
        RUNS,
        config,
        COST_CACHE,
        " ".join(map(os.path.relpath, workflow.config_settings.configfiles))
        or "config/config.yaml",
    )
    if _missing:
        log_stderr(_missing)
if workflow.is_main_process and TRAIN_PACKS and job_gpus() and PACK_BUDGET is None:
    log_stderr(
        f"pack_runs={config['pack_runs']}: packs are cut by count only, not checked against GPU "
        "memory; add gpu_memory_mb=<MB of one GPU of the nodes> to --config so that no pack plans "
        "more memory than its GPU has (docs/cluster.md, packs)"
    )


# Head-only transfer runs share one backbone pass per feature set (fmnist.features).
FEATURE_SETS = {}
FEATURE_RUN = {}  # a run of each set: the plan's figures for its pass are keyed by it
if config["feature_cache"]:
    for _run in RUNS.values():
        if fmnist_features.cacheable(_run):
            FEATURE_SETS.setdefault(
                fmnist_features.feature_key(_run), fmnist_features.feature_spec(_run)
            )
            FEATURE_RUN.setdefault(fmnist_features.feature_key(_run), _run)


def feature_resources(name):
    """A features job's `name` (runtime or mem_mb) from the cost plan's figure for its backbone pass."""
    return lambda wildcards, attempt: fmnist_plan.feature_resources(
        FEATURE_RUN[wildcards.feature_set], config, attempt, COST_CACHE
    )[name]


def run_features_path(run_id):
    """The cached features file a run trains its head on, or None."""
    run = RUNS[run_id]
    if config["feature_cache"] and fmnist_features.cacheable(run):
        return f"{fmnist_features.FEATURE_DIR}/{fmnist_features.feature_key(run)}.pt"
    return None


def run_features(wildcards):
    """The train job's cached features input, if its run uses them."""
    path = run_features_path(wildcards.run)
    return {"features": path} if path else {}


def run_config(wildcards):
    # while the DAG is built, when Snakemake knows its executor
    fmnist_devicecheck.check_workflow_device(config, workflow)
    return fmnist_config.canonical_json(RUNS[wildcards.run])


# The code identity of each run (a param of train): its model family's module and class, the trainer
# and every fmnist module they import (fmnist.codeid). Editing one family's file reruns its runs only.
TRAIN_CODE = codeid.train_code_ids(RUNS)


def train_code(wildcards):
    return TRAIN_CODE[wildcards.run]


def run_files(name):
    return expand(f"{RUN_DIR}/{name}", run=list(RUNS))


wildcard_constraints:
    run="|".join(map(lambda r: r.replace(".", r"\."), RUNS)) or "NO_RUNS",
    pack="|".join(TRAIN_PACKS) or "NO_PACKS",
    name="|".join(fmnist_fetch.FILES),
    feature_set="|".join(map(lambda k: k.replace(".", r"\."), FEATURE_SETS)) or "NO_FEATURE_SETS",


# The image for `--sdm apptainer` (containers/fmnist.def; docs/cluster.md): every rule's script runs
# in it. Ignored without --sdm apptainer.
container: workflow_file("containers/fmnist.sif")

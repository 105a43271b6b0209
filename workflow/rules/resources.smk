# What each job asks of the machine or the cluster: gpu, gpu_slots, runtime and mem_mb, sized by
# fmnist.workflow from the cost plan's figures (`python -m fmnist plan`; docs/cluster.md).

# The user counts GPUs (`--resources gpu=N`). Run locally, the workflow packs jobs onto them: it
# registers `gpu_slots` = N x slots per GPU, each GPU job asks the slots its planned memory needs, and
# the job takes them on one GPU by file locks (fmnist.gpus). `gpu_per_run: N` turns packing off: each
# job then asks `gpu=N`, one job per GPU (SLURM gives each job its own GPUs that way).
_slots = fmnist_workflow.slot_registration(STUDY.packing)
if _slots is not None:
    if workflow.global_resources.get("gpu_slots").value is None:
        workflow.register_resource("gpu_slots", _slots[0])
    os.environ.update(_slots[1])

# Training jobs grouped for a cluster: `--group-components gpu=N` (profiles/slurm) makes one SLURM job
# of N training runs on one GPU. With the `gpu` resource's scope local and `--resources gpu=1`, the
# group trains them one after another (as the SLURM plugin runs a group's jobs anyway) and asks for the
# sum of their runtimes, the largest of their memory and CPUs, and one GPU. Locally, Snakemake ignores
# groups.
GPU_GROUP = "gpu"

# Said once, by the submitting Snakemake: the runs whose jobs get the default resources and how to
# measure their figures (a grouped cluster run, or one naming plan_device); packs cut by count only.
if workflow.is_main_process:
    for _message in STUDY.messages(
        grouped=GPU_GROUP in workflow.group_settings.group_components,
        configfiles=workflow.config_settings.configfiles,
    ):
        log_stderr(_message)


def job_gpus():
    """The gpu resource of a training or features job (fmnist.workflow.Study.job_gpus)."""
    return STUDY.job_gpus()


def gpu_slots(kind):
    """The gpu_slots resource of a `kind` (train or features) job: the slots of one GPU its planned
    memory needs (0 without packing)."""
    if STUDY.packing is None:
        return 0
    if kind == "features":
        return STUDY.features_gpu_slots()
    return lambda wildcards: STUDY.train_gpu_slots(wildcards.run)


def train_resources(name):
    """A train job's `name` (runtime or mem_mb) from the cost plan's figures, growing with each attempt."""
    return lambda wildcards, attempt: STUDY.train_resources(wildcards.run, attempt)[name]


def feature_resources(name):
    """A features job's `name` (runtime or mem_mb) from the cost plan's figure for its backbone pass."""
    return lambda wildcards, attempt: STUDY.feature_resources(wildcards.feature_set, attempt)[name]


def pack_resources(name):
    """A train_pack job's `name` (runtime or mem_mb): the sum over its runs of what each asks alone."""
    return lambda wildcards, attempt: STUDY.pack_resources(wildcards.pack, attempt)[name]


def pack_gpu_slots():
    """Packed locally onto GPUs: a pack asks the slots of its runs together, at most one GPU's."""
    if STUDY.packing is None:
        return 0
    return lambda wildcards: STUDY.pack_gpu_slots(wildcards.pack)

"""Whether the device a config names exists where its jobs will run: `device: cuda` on a machine without
an NVIDIA GPU fails when the workflow builds its DAG, dry run included, with the fix, rather than in
every training job with a traceback. Only where the jobs run on this machine: a cluster's login node
submits jobs to GPU nodes and needs no GPU of its own. No torch: the workflow calls this while it
builds the DAG."""

from __future__ import annotations

from fmnist.config import ConfigError, nvidia_gpu_present


def jobs_run_here(workflow) -> bool:
    """Whether the jobs of a Snakemake `workflow` run on this machine: the executor in effect runs them
    locally and this process is not itself a job on a compute node.

    Read while the DAG is built, not while the Snakefile is parsed (Snakemake knows its executor only
    then). A dry run swaps the executor for its `dryrun` stand-in, which runs locally whatever the
    executor asked for; the intended executor still shows in `execution_settings.use_threads`, which
    Snakemake turns on for every executor that does not run jobs locally (and with --force-use-threads,
    where this check then stays quiet)."""
    plugin = workflow.executor_plugin
    if plugin is None or workflow.remote_exec:
        return False
    return bool(plugin.common_settings.local_exec and not workflow.execution_settings.use_threads)


def check_jobs_device(device: str, here: bool, gpu_present=nvidia_gpu_present) -> None:
    """Refuse `device` (the config's) when the jobs run `here` and it names CUDA on a machine with no
    NVIDIA GPU."""
    if here and device.startswith("cuda") and not gpu_present():
        raise ConfigError(
            f"device is {device!r}, but this machine has no NVIDIA GPU (no /dev/nvidiactl, or "
            "CUDA_VISIBLE_DEVICES hides them all) and the jobs would train here. Fix: --config device=auto "
            "(a GPU where there is one, else the CPU) or device=cpu; or submit the jobs to GPU nodes "
            "(--profile profiles/slurm, docs/cluster.md)."
        )


def check_workflow_device(config: dict, workflow) -> None:
    """`check_jobs_device` for a Snakemake workflow's config (the call the workflow makes)."""
    check_jobs_device(config["device"], jobs_run_here(workflow))

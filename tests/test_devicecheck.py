"""`device: cuda` where the jobs will run on a machine without an NVIDIA GPU: refused while the DAG is
built (dry run included), with the fix; never on a cluster's login node, which submits the jobs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import make_workflow, snakemake, tiny_config

from fmnist.config import ConfigError
from fmnist.devicecheck import check_jobs_device, jobs_run_here


def workflow(local_exec: bool | None, use_threads: bool = False, remote: bool = False):
    plugin = None if local_exec is None else SimpleNamespace(common_settings=SimpleNamespace(local_exec=local_exec))
    return SimpleNamespace(executor_plugin=plugin, remote_exec=remote,
                           execution_settings=SimpleNamespace(use_threads=use_threads))


def test_jobs_run_here_only_with_a_local_executor_on_the_submitting_machine():
    assert jobs_run_here(workflow(True))  # local, or a local dry run
    assert not jobs_run_here(workflow(True, use_threads=True))  # a dry run of `--executor slurm`
    assert not jobs_run_here(workflow(False, use_threads=True))  # --executor slurm
    assert not jobs_run_here(workflow(True, remote=True))  # a job on a compute node
    assert not jobs_run_here(workflow(None))  # while parsing: not known yet


def test_cuda_without_a_gpu_is_refused_only_where_the_jobs_run():
    with pytest.raises(ConfigError, match=r"device is 'cuda:1'.*no NVIDIA GPU.*Fix: --config device=auto"):
        check_jobs_device("cuda:1", here=True, gpu_present=lambda: False)
    check_jobs_device("cuda", here=False, gpu_present=lambda: False)  # a login node submits
    check_jobs_device("cuda", here=True, gpu_present=lambda: True)
    check_jobs_device("cpu", here=True, gpu_present=lambda: False)
    check_jobs_device("auto", here=True, gpu_present=lambda: False)


@pytest.mark.slow
def test_a_dry_run_with_cuda_on_a_machine_without_a_gpu_fails_locally_but_not_for_slurm(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU, whatever this machine has
    root = make_workflow(tmp_path / "wf", tiny_config(device="cuda"))
    local = snakemake(root, "-n", check=False)
    text = local.stdout + local.stderr
    assert local.returncode != 0 and "device is 'cuda', but this machine has no NVIDIA GPU" in text, text[-3000:]
    assert "--config device=auto" in text
    slurm = snakemake(root, "-n", "--executor", "slurm", "--jobs", "4", check=False)
    assert slurm.returncode == 0, (slurm.stdout + slurm.stderr)[-3000:]
    assert "no NVIDIA GPU" not in slurm.stdout + slurm.stderr

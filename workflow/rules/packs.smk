# Training packs (config pack_runs > 1; fmnist.packs, docs/cluster.md): a `train_pack` job trains its
# runs side by side on its GPU, and each run's `train` job, local, only links the staged result into
# its run folder. This is how one SLURM allocation fills its GPU: the plugin runs the jobs of a group
# one after another. fmnist.workflow cuts the packs, by count and, where one GPU's memory is known (the
# local GPUs, or config gpu_memory_mb), by the plan's GPU memory figures.


if TRAIN_PACKS:

    # One job per pack: its runs side by side, each in its own process, on the job's GPU. Its runtime
    # and memory are the sums of its runs' (the plan's figures); its CPUs are `threads` per run.
    rule train_pack:
        input:
            features=lambda wildcards: STUDY.pack_features(wildcards.pack),
            data=PREPARED,
        output:
            STUDY.pack_output("{pack}"),
        log:
            "logs/train_pack/{pack}.log",
        conda:
            "../envs/fmnist.yaml"
        threads: lambda wildcards: STUDY.pack_threads(wildcards.pack)
        resources:
            gpu=job_gpus(),
            cpus_per_task=lambda wildcards: STUDY.pack_threads(wildcards.pack),
            gpu_slots=pack_gpu_slots(),
            runtime=pack_resources("runtime"),
            mem_mb=pack_resources("mem_mb"),
        params:
            runs=lambda wildcards: STUDY.pack_params(wildcards.pack)["runs"],
            code=lambda wildcards: STUDY.pack_params(wildcards.pack)["code"],
            features=lambda wildcards: STUDY.pack_params(wildcards.pack)["features"],
            # the launcher, and the link script of each run's train job (fmnist.codeid.PACK_MODULES)
            launcher=codeid.code_id(codeid.PACK_MODULES),
            device=config["device"],
            threads_per_run=config["threads"],
            max_steps=fmnist_smoke.SMOKE_STEPS if config["smoke"] else None,
        script:
            "../scripts/train_pack.py"

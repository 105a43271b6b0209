# One training job per resolved run; its resolved config and its code identity are params, so changing
# either reruns that run only.


rule features:
    input:
        data=PREPARED,
    output:
        f"{fmnist_features.FEATURE_DIR}/{{feature_set}}.pt",
    log:
        "logs/features/{feature_set}.log",
    conda:
        "../envs/fmnist.yaml"
    threads: config["threads"]
    resources:
        gpu=job_gpus(),
        cpus_per_task=config["threads"],  # not capped by the submitting machine's cores
        gpu_slots=gpu_slots("features"),
        runtime=feature_resources("runtime"),  # minutes; `python -m fmnist plan` measures the pass
        mem_mb=feature_resources("mem_mb"),
    params:
        spec=lambda wildcards: FEATURE_SETS[wildcards.feature_set],
        # the feature code and the backbone's family module (fmnist.codeid)
        code=lambda wildcards: STUDY.features_code(wildcards.feature_set),
        device=config["device"],
    script:
        "../scripts/features.py"


TRAIN_OUTPUTS = multiext(
    f"{RUN_DIR}/",
    metrics="metrics.json",
    history="history.csv",
    confusion="confusion.csv",
    model="model.pt",
)


# In pack mode (config pack_runs > 1) a train job does not train: its run's pack trained it side by
# side with the pack's other runs (train_pack, packs.smk), and the job, local, links the staged result
# into the run folder (fmnist.packs). Its params stay the run's, so changing a run reruns its pack and
# then it.
if TRAIN_PACKS:

    localrules:
        train,

    rule train:
        input:
            unpack(run_features),
            unpack(run_pack_input),
            data=PREPARED,
        output:
            TRAIN_OUTPUTS,
        log:
            "logs/train/{run}.log",
        conda:
            "../envs/fmnist.yaml"
        threads: 1
        resources:
            gpu=0,
            cpus_per_task=1,
            gpu_slots=0,
            runtime=fmnist_workflow.PACK_LINK_RUNTIME,  # minutes
            mem_mb=fmnist_workflow.PACK_LINK_MEM_MB,
        params:
            run=run_config,
            code=train_code,
            device=config["device"],
            max_steps=fmnist_smoke.SMOKE_STEPS if config["smoke"] else None,
        script:
            "../scripts/train_link.py"

else:

    rule train:
        input:
            unpack(run_features),
            data=PREPARED,
        output:
            TRAIN_OUTPUTS,
        log:
            "logs/train/{run}.log",
        # The run cache (docs/reliability.md): a result of these exact params, code and inputs is
        # restored, not retrained. Snakemake refuses `benchmark:` on a cached rule; metrics.json
        # records the timings.
        cache: True
        group:
            GPU_GROUP
        conda:
            "../envs/fmnist.yaml"
        threads: config["threads"]
        resources:
            gpu=job_gpus(),
            cpus_per_task=config["threads"],  # not capped by the submitting machine's cores
            gpu_slots=gpu_slots("train"),
            runtime=train_resources("runtime"),  # minutes; `python -m fmnist plan` measures the figures
            mem_mb=train_resources("mem_mb"),
        params:
            run=run_config,
            code=train_code,
            device=config["device"],
            max_steps=fmnist_smoke.SMOKE_STEPS if config["smoke"] else None,
        script:
            "../scripts/train.py"


rule plot_run:
    input:
        metrics=f"{RUN_DIR}/metrics.json",
        history=f"{RUN_DIR}/history.csv",
        confusion=f"{RUN_DIR}/confusion.csv",
    output:
        curves=report(
            f"{RUN_DIR}/curves.png",
            caption="../report/curves.rst",
            category="3. Runs",
            labels={"run": "{run}", "figure": "learning curves"},
        ),
        confusion=report(
            f"{RUN_DIR}/confusion.png",
            caption="../report/confusion.rst",
            category="3. Runs",
            labels={"run": "{run}", "figure": "confusion matrix"},
        ),
    log:
        "logs/plot_run/{run}.log",
    conda:
        "../envs/fmnist.yaml"
    params:
        code=codeid.code_id(codeid.PLOT_MODULES),
    script:
        "../scripts/plot_run.py"

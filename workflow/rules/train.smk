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
    params:
        spec=lambda wildcards: FEATURE_SETS[wildcards.feature_set],
        # the feature code and the backbone's family module (fmnist.codeid)
        code=lambda wildcards: codeid.features_code_id(FEATURE_SETS[wildcards.feature_set]),
        device=config["device"],
    script:
        "../scripts/features.py"


rule train:
    input:
        unpack(run_features),
        data=PREPARED,
    output:
        # multiext: the form Snakemake's between-workflow cache takes for a rule with several outputs.
        multiext(
            f"{RUN_DIR}/",
            metrics="metrics.json",
            history="history.csv",
            confusion="confusion.csv",
            model="model.pt",
        ),
    log:
        "logs/train/{run}.log",
    # The run cache (docs/reliability.md): a result of these exact params, code and inputs is restored,
    # not retrained. Snakemake refuses `benchmark:` on a cached rule; metrics.json records the timings.
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

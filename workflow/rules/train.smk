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
        code=lambda wildcards: codeid.features_code_id(FEATURE_SETS[wildcards.feature_set]),
        device=config["device"],
    script:
        "../scripts/features.py"


# In pack mode (config pack_runs > 1) a train job does not train: its run's pack trained it side by side
# with the pack's other runs, and the job, local, links the staged result into the run folder
# (fmnist.packs). Its params stay the run's, so changing a run reruns its pack and then it.
if TRAIN_PACKS:

    localrules:
        train,


rule train:
    input:
        unpack(run_features),
        unpack(run_pack_input),
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
    # Off in pack mode: there the pack has trained the run before this job could look.
    cache: not TRAIN_PACKS
    group:
        None if TRAIN_PACKS else GPU_GROUP
    conda:
        "../envs/fmnist.yaml"
    threads: 1 if TRAIN_PACKS else config["threads"]
    resources:
        gpu=0 if TRAIN_PACKS else job_gpus(),
        # not capped by the submitting machine's cores
        cpus_per_task=1 if TRAIN_PACKS else config["threads"],
        gpu_slots=0 if TRAIN_PACKS else gpu_slots("train"),
        # minutes; `python -m fmnist plan` measures the figures
        runtime=5 if TRAIN_PACKS else train_resources("runtime"),
        mem_mb=1000 if TRAIN_PACKS else train_resources("mem_mb"),
    params:
        run=run_config,
        code=train_code,
        device=config["device"],
        max_steps=fmnist_smoke.SMOKE_STEPS if config["smoke"] else None,
    script:
        "../scripts/train_link.py" if TRAIN_PACKS else "../scripts/train.py"


if TRAIN_PACKS:

    # One job per pack: its runs side by side, each in its own process, on the job's GPU. Its runtime
    # and memory are the sums of its runs' (the plan's figures); its CPUs are `threads` per run.
    rule train_pack:
        input:
            features=pack_features,
            data=PREPARED,
        output:
            pack_output("{pack}"),
        log:
            "logs/train_pack/{pack}.log",
        conda:
            "../envs/fmnist.yaml"
        threads: lambda wildcards: config["threads"] * len(TRAIN_PACKS[wildcards.pack])
        resources:
            gpu=job_gpus(),
            cpus_per_task=lambda wildcards: config["threads"] * len(TRAIN_PACKS[wildcards.pack]),
            gpu_slots=pack_gpu_slots(),
            runtime=pack_resources("runtime"),
            mem_mb=pack_resources("mem_mb"),
        params:
            runs=lambda wildcards: {
                r: fmnist_config.canonical_json(RUNS[r]) for r in TRAIN_PACKS[wildcards.pack]
            },
            code=lambda wildcards: {r: TRAIN_CODE[r] for r in TRAIN_PACKS[wildcards.pack]},
            features=lambda wildcards: {
                r: run_features_path(r) for r in TRAIN_PACKS[wildcards.pack]
            },
            # the launcher, and the link script of each run's train job (fmnist.codeid.PACK_MODULES)
            launcher=codeid.code_id(codeid.PACK_MODULES),
            device=config["device"],
            threads_per_run=config["threads"],
            max_steps=fmnist_smoke.SMOKE_STEPS if config["smoke"] else None,
        script:
            "../scripts/train_pack.py"


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

# One training job per resolved run; its resolved config is a param, so changing it reruns that run only.


rule train:
    input:
        data=PREPARED,
    output:
        metrics=f"{RUN_DIR}/metrics.json",
        history=f"{RUN_DIR}/history.csv",
        confusion=f"{RUN_DIR}/confusion.csv",
        model=f"{RUN_DIR}/model.pt",
    params:
        run=run_config,
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=gpu_per_run(),
        runtime=train_resources("runtime"),  # minutes; `python -m fmnist plan` measures the figures
        mem_mb=train_resources("mem_mb"),
    conda:
        "../../envs/fmnist.yaml"
    log:
        "logs/train/{run}.log",
    benchmark:
        "benchmarks/train/{run}.tsv"
    script:
        "../scripts/train.py"


rule plot_run:
    input:
        metrics=f"{RUN_DIR}/metrics.json",
        history=f"{RUN_DIR}/history.csv",
        confusion=f"{RUN_DIR}/confusion.csv",
    output:
        curves=report(f"{RUN_DIR}/curves.png", caption="../report/curves.rst", category="3. Runs",
                      labels={"run": "{run}", "figure": "learning curves"}),
        confusion=report(f"{RUN_DIR}/confusion.png", caption="../report/confusion.rst", category="3. Runs",
                         labels={"run": "{run}", "figure": "confusion matrix"}),
    conda:
        "../../envs/fmnist.yaml"
    log:
        "logs/plot_run/{run}.log",
    script:
        "../scripts/plot_run.py"

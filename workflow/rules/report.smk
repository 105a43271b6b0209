# Aggregate per-run files into tables and render the single-file HTML summary.


rule aggregate:
    input:
        metrics=run_files("metrics.json"),
    output:
        runs="results/runs.csv",
        experiments="results/experiments.csv",
        tables=directory("results/tables"),
    params:
        studies=STUDIES,
    conda:
        "../../envs/fmnist.yaml"
    log:
        "logs/aggregate.log",
    script:
        "../scripts/aggregate.py"


rule report:
    input:
        runs="results/runs.csv",
        experiments="results/experiments.csv",
        tables="results/tables",
        figures=run_files("curves.png") + run_files("confusion.png"),
        template="workflow/templates/summary.html.j2",
    output:
        "reports/summary.html",
    params:
        studies=STUDIES,
        title=config["report"]["title"],
        config_hash=experiments.config_hash(config),
    conda:
        "../../envs/fmnist.yaml"
    log:
        "logs/report.log",
    script:
        "../scripts/report.py"

# Aggregate per-run files into tables, draw the study-level figures and render the single-file HTML summary.

SWEEPS = {s["name"]: s for s in config["report"]["sweeps"]}
FIGURES = "results/figures"
# Inputs, so editing a template reruns the report; they ship inside the fmnist package. Relative to
# the working directory, so that moving the checkout (the inputs' absolute paths) reruns nothing.
TEMPLATES = sorted(os.path.relpath(p) for p in fmnist_config.TEMPLATE_DIR.glob("*.j2"))


wildcard_constraints:
    sweep="|".join(SWEEPS) or "NO_SWEEPS",


rule aggregate:
    input:
        metrics=run_files("metrics.json"),
        published=[PUBLISHED] if PUBLISHED else [],
    output:
        runs="results/runs.csv",
        experiments="results/experiments.csv",
        tables=directory("results/tables"),
    log:
        "logs/aggregate.log",
    conda:
        "../envs/fmnist.yaml"
    params:
        studies=STUDIES,
        sweeps=config["report"]["sweeps"],
        baseline=config["report"]["baseline_augmentation"],
        code=codeid.code_id(codeid.AGGREGATE_MODULES),
    script:
        "../scripts/aggregate.py"


rule figures:
    input:
        experiments="results/experiments.csv",
        tables="results/tables",
    output:
        effects=report(
            f"{FIGURES}/effects.png",
            caption="../report/effects.rst",
            category="1. Findings",
        ),
        pareto=report(
            f"{FIGURES}/pareto.png",
            caption="../report/pareto.rst",
            category="1. Findings",
        ),
    log:
        "logs/figures.log",
    conda:
        "../envs/fmnist.yaml"
    params:
        code=codeid.code_id(codeid.PLOT_MODULES),
    script:
        "../scripts/figures.py"


rule figure_sweep:
    input:
        tables="results/tables",
    output:
        report(
            f"{FIGURES}/sweep_{{sweep}}.png",
            caption="../report/sweep.rst",
            category="2. Sweeps",
            labels={"sweep": "{sweep}"},
        ),
    log:
        "logs/figure_sweep/{sweep}.log",
    conda:
        "../envs/fmnist.yaml"
    params:
        code=codeid.code_id(codeid.PLOT_MODULES),
        title=lambda wildcards: SWEEPS[wildcards.sweep]["title"]
        or f"sweep {wildcards.sweep}: {SWEEPS[wildcards.sweep]['x']}",
        log_x=lambda wildcards: SWEEPS[wildcards.sweep]["log_x"],
    script:
        "../scripts/figure_sweep.py"


rule dataset_figures:
    input:
        data=PREPARED,
    output:
        distribution=report(
            f"{FIGURES}/class_distribution.png",
            caption="../report/class_distribution.rst",
            category="4. Dataset",
        ),
        samples=report(
            f"{FIGURES}/samples.png",
            caption="../report/samples.rst",
            category="4. Dataset",
        ),
    log:
        "logs/dataset_figures.log",
    conda:
        "../envs/fmnist.yaml"
    params:
        code=codeid.code_id(codeid.PLOT_MODULES),
    script:
        "../scripts/dataset_figures.py"


rule gallery:
    input:
        data=PREPARED,
    output:
        report(
            f"{FIGURES}/augmentations.png",
            caption="../report/augmentations.rst",
            category="4. Dataset",
        ),
    log:
        "logs/gallery.log",
    conda:
        "../envs/fmnist.yaml"
    params:
        code=codeid.code_id(codeid.GALLERY_MODULES),
    script:
        "../scripts/gallery.py"


rule report:
    input:
        runs="results/runs.csv",
        experiments="results/experiments.csv",
        tables="results/tables",
        metrics=run_files("metrics.json"),
        confusion=run_files("confusion.csv"),
        run_figures=run_files("curves.png") + run_files("confusion.png"),
        effects=f"{FIGURES}/effects.png",
        pareto=f"{FIGURES}/pareto.png",
        sweeps=expand(f"{FIGURES}/sweep_{{sweep}}.png", sweep=list(SWEEPS)),
        distribution=f"{FIGURES}/class_distribution.png",
        samples=f"{FIGURES}/samples.png",
        gallery=f"{FIGURES}/augmentations.png",
        templates=TEMPLATES,
    output:
        report(
            "reports/summary.html",
            caption="../report/summary.rst",
            category="0. Summary",
        ),
    log:
        "logs/report.log",
    conda:
        "../envs/fmnist.yaml"
    params:
        studies=STUDIES,
        descriptions={name: spec.get("description", "") for name, spec in config["studies"].items()},
        sweeps=config["report"]["sweeps"],
        title=config["report"]["title"],
        config_hash=fmnist_config.config_hash(config),
        template="summary.html.j2",
        code=codeid.code_id(codeid.REPORT_MODULES),
        smoke=config["smoke"],
    script:
        "../scripts/report.py"

# Aggregate per-run files into tables, draw the study-level figures and render the single-file HTML summary.

PUBLISHED = config["report"]["published"]
SWEEPS = {s["name"]: s for s in config["report"]["sweeps"]}
FIGURES = "results/figures"
# absolute: smoke mode runs in smoke/ (fmnist.smoke), away from the templates
TEMPLATES = sorted(str(p) for p in Path(workflow.basedir, "workflow", "templates").absolute().glob("*.j2"))


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
    params:
        studies=STUDIES,
        sweeps=config["report"]["sweeps"],
        baseline=config["report"]["baseline_augmentation"],
    conda:
        "../../envs/fmnist.yaml"
    log:
        "logs/aggregate.log",
    script:
        "../scripts/aggregate.py"


rule figures:
    input:
        experiments="results/experiments.csv",
        tables="results/tables",
    output:
        effects=report(f"{FIGURES}/effects.png", caption="../report/effects.rst", category="1. Findings"),
        pareto=report(f"{FIGURES}/pareto.png", caption="../report/pareto.rst", category="1. Findings"),
    conda:
        "../../envs/fmnist.yaml"
    log:
        "logs/figures.log",
    script:
        "../scripts/figures.py"


rule figure_sweep:
    input:
        tables="results/tables",
    output:
        report(f"{FIGURES}/sweep_{{sweep}}.png", caption="../report/sweep.rst", category="2. Sweeps",
               labels={"sweep": "{sweep}"}),
    params:
        title=lambda wildcards: SWEEPS[wildcards.sweep]["title"] or f"sweep {wildcards.sweep}: {SWEEPS[wildcards.sweep]['x']}",
        log_x=lambda wildcards: SWEEPS[wildcards.sweep]["log_x"],
    conda:
        "../../envs/fmnist.yaml"
    log:
        "logs/figure_sweep/{sweep}.log",
    script:
        "../scripts/figure_sweep.py"


rule dataset_figures:
    input:
        data=PREPARED,
    output:
        distribution=report(f"{FIGURES}/class_distribution.png", caption="../report/class_distribution.rst",
                            category="4. Dataset"),
        samples=report(f"{FIGURES}/samples.png", caption="../report/samples.rst", category="4. Dataset"),
    conda:
        "../../envs/fmnist.yaml"
    log:
        "logs/dataset_figures.log",
    script:
        "../scripts/dataset_figures.py"


rule gallery:
    input:
        data=PREPARED,
    output:
        report(f"{FIGURES}/augmentations.png", caption="../report/augmentations.rst", category="4. Dataset"),
    conda:
        "../../envs/fmnist.yaml"
    log:
        "logs/gallery.log",
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
        report("reports/summary.html", caption="../report/summary.rst", category="0. Summary"),
    params:
        studies=STUDIES,
        descriptions={name: spec.get("description", "") for name, spec in config["studies"].items()},
        sweeps=config["report"]["sweeps"],
        title=config["report"]["title"],
        config_hash=experiments.config_hash(config),
        template="summary.html.j2",
        smoke=config["smoke"],
    conda:
        "../../envs/fmnist.yaml"
    log:
        "logs/report.log",
    script:
        "../scripts/report.py"

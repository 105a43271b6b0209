"""fmnist: the Fashion-MNIST model study as a Snakemake workflow.

download (checksummed) -> prepare (once) -> train (one job per run) -> plot_run -> aggregate -> report
"""

from snakemake.utils import min_version

min_version("9.11")


# A --configfile replaces config/config.yaml instead of being merged into it, so a study file
# (config/full.yaml, a test's config) never inherits the default study. --config still overrides.
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


# On a cluster these run in the submitting snakemake, not as jobs: download needs the network that
# compute nodes often lack, and the others take seconds, less than a trip through the queue.
localrules:
    all,
    download,
    plot_run,
    aggregate,
    figures,
    figure_sweep,
    dataset_figures,
    gallery,
    report,


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "reports/summary.html",

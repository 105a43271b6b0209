"""fmnist: the Fashion-MNIST model study as a Snakemake workflow.

download (checksummed) -> prepare (once) -> train (one job per run) -> plot_run -> aggregate -> report
"""

from snakemake.utils import min_version

min_version("9.11")


# A --configfile replaces config/config.yaml instead of being merged into it, so a study file
# (config/full.yaml, a test's config) never inherits the default study. --config still overrides.
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "reports/summary.html",

"""fmnist: the Fashion-MNIST model study as a Snakemake workflow.

`snakemake` in the repository root runs the workflow in workflow/Snakefile (the layout of the
Snakemake workflow catalog); other workflows use that file as a module (see config/README.md).
"""

# The `include:` keyword would drop workflow/Snakefile's default target (`rule all`); this is the same
# call with the flag that keeps it, as Snakemake itself makes for a main Snakefile and for modules.
workflow.include("workflow/Snakefile", overwrite_default_target=True)

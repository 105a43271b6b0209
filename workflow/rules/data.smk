# Fetch the four IDX files (verified by payload SHA-256) and decode them once into a split file.


# A `run` block, not a script: Snakemake reruns a script rule whose script is newer than its outputs
# (a fresh clone or worktree with the data copied in), and a re-fetch then ended the run after the
# downloads, its targets untrained (the jobs below prepare's ancient input fell out of the DAG).
# The files are pinned by hash, so no edit of this code can make a verified copy stale.
rule download:
    output:
        RAW_DIR / "{name}",
    log:
        "logs/download/{name}.log",
    retries: 1
    params:
        sources=config["data"]["sources"],
        timeout=config["data"]["timeout"],
    run:
        fmnist_fetch.fetch_logged(
            wildcards.name, params.sources, output[0], log[0], timeout=params.timeout
        )


rule prepare:
    input:
        # Content is pinned by hash (checked at start-up), so a re-fetched file re-triggers nothing.
        ancient(expand(RAW_DIR / "{name}", name=fmnist_fetch.FILES)),
    output:
        PREPARED,
    log:
        "logs/prepare.log",
    conda:
        "../envs/fmnist.yaml"
    params:
        raw_dir=lambda wildcards, input: os.path.dirname(input[0]),
        val_fraction=config["data"]["val_fraction"],
        split_seed=config["data"]["split_seed"],
        train_limit=config["data"]["train_limit"],
        test_limit=config["data"]["test_limit"],
        code=codeid.code_id(codeid.DATA_MODULES),
    script:
        "../scripts/prepare.py"

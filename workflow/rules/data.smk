# Fetch the four IDX files (verified by payload SHA-256) and decode them once into a split file.


rule download:
    output:
        RAW_DIR / "{name}",
    log:
        "logs/download/{name}.log",
    retries: 1
    conda:
        "../envs/fmnist.yaml"
    params:
        sources=config["data"]["sources"],
        timeout=config["data"]["timeout"],
    script:
        "../scripts/download.py"


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

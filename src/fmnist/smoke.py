"""Smoke mode: every job of a config, for a few steps on a tiny slice of the real data, in its own tree.

`snakemake --config smoke=true` (with any --configfile) runs the real rules on the real data, but:
the working directory is `smoke/` (results, logs, data and Snakemake's own metadata included), so
nothing it writes can be mistaken for, or mixed with, real results; the prepared file is a stratified
slice; each run trains SMOKE_EPOCHS epochs of at most SMOKE_STEPS steps at a batch of at most
SMOKE_BATCH (its memory and time, not its code path, depend on that); and only the first seed of each
study runs (seeds differ only in random draws). The report's first line says "smoke".
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

WORKDIR = "smoke"
# 100 training images (90 train, 10 validation, one per class), 20 test. The smallest training
# fraction of config/full.yaml (0.5) still keeps 4 images of each class.
SMOKE_DATA = {"train_limit": 100, "test_limit": 20}
SMOKE_EPOCHS = 2
SMOKE_STEPS = 2
# Small batches: a smoke job's own compute is then a few forward passes even for report C's transfer
# ResNet18 at 224x224; BatchNorm and the label-mixing augmentations still see more than one image.
SMOKE_BATCH = 4
MARKER = "<!-- smoke run: a few steps per job on a slice of the data; these are not results -->"
TITLE_PREFIX = "SMOKE RUN (not results): "


def normalise_switch(config: dict) -> None:
    """`--config smoke=true` arrives as the string "true": make it the boolean the schema wants."""
    value = config.get("smoke")
    if isinstance(value, str):
        words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
        if value.strip().lower() not in words:
            from fmnist.config import ConfigError

            raise ConfigError(f"smoke: {value!r} is not a switch; use --config smoke=true (or false)")
        config["smoke"] = words[value.strip().lower()]


def configure(config: dict) -> None:
    """Turn a validated config into its smoke version, in place. Call it before changing directory:
    paths relative to the launch directory (the download cache, the published figures) become absolute."""
    data = config["data"]
    # the launch directory's download cache is the first source, so smoke mode re-fetches nothing
    raw = Path(data["dir"]).absolute() / "raw"
    sources = [os.path.abspath(s) if "://" not in s and os.path.exists(s) else s for s in data["sources"]]
    data["sources"] = [str(raw), *sources] if raw.is_dir() else sources
    data.update(SMOKE_DATA)
    data["dir"] = "data"  # inside the smoke tree
    report = config["report"]
    if report.get("published") and not os.path.isabs(report["published"]):
        report["published"] = os.path.abspath(report["published"])
    report["title"] = TITLE_PREFIX + report["title"]
    for study in config["studies"].values():
        study["seeds"] = list(study.get("seeds", [0]))[:1]


def shrink_run(run: dict) -> dict:
    """A resolved run with the smoke mode's epochs and batch caps (its other settings unchanged)."""
    run = copy.deepcopy(run)
    t = run["train"]
    t["epochs"] = min(int(t["epochs"]), SMOKE_EPOCHS)
    t["batch_size"] = min(int(t["batch_size"]), SMOKE_BATCH)
    t["eval_batch_size"] = min(int(t["eval_batch_size"]), SMOKE_DATA["test_limit"])
    return run


def mark_report(path: Path | str) -> None:
    """Put the smoke marker on the report's first line."""
    path = Path(path)
    path.write_text(MARKER + "\n" + path.read_text())

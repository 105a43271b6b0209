"""The run cache: a result, once computed, survives other configs and reverted edits, and comes back without training.

Run ids name runs, not their content: the same id under another config (or after an edit) is another
result. Snakemake's between-workflow cache (`cache: True` on the train rule, `--cache` in
profiles/default, entries in cache/) keys each result by its params, code and inputs, so both
results are kept and switching back links the earlier one in again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_workflow, snakemake, tiny_config, write_config

from fmnist.config import deep_merge

pytestmark = pytest.mark.slow

RUN = "standard_cnn.none.default.s0"
TARGET = f"results/runs/{RUN}/metrics.json"
DEFAULT = tiny_config(defaults={"epochs": 1, "train_fraction": 0.25})


def result(root: Path) -> tuple[str, bytes]:
    """Where the run's metrics.json lives (its cache entry) and its bytes."""
    path = root / TARGET
    return str(path.resolve()), path.read_bytes()


def trained(proc) -> bool:
    """Whether a Snakemake run trained (stored a new result in the cache) rather than restored one."""
    text = proc.stdout + proc.stderr
    return f"Moving output file {TARGET} to cache" in text


def test_another_config_and_back_trains_nothing_the_second_time(tmp_path):
    root = make_workflow(tmp_path / "wf", DEFAULT)
    write_config(root, deep_merge(DEFAULT, {"defaults": {"epochs": 2}}), "other.yaml")
    assert trained(snakemake(root, "--", TARGET))
    first = result(root)

    # Another config with the same run id: its own result, the first one kept in the cache.
    assert trained(snakemake(root, "--", TARGET, configfile="other.yaml"))
    other = result(root)
    assert json.loads(other[1])["epochs_run"] == 2 and other[0] != first[0]
    assert Path(first[0]).read_bytes() == first[1]

    # Back to the default study: planned and done as a restore from the cache, no training.
    plan = snakemake(root, "-n", "--", TARGET)
    assert (
        f"Output file {TARGET} will be obtained from global between-workflow cache"
        in plan.stdout + plan.stderr
    )
    back = snakemake(root, "--", TARGET)
    assert (
        not trained(back)
        and f"Symlinking output file {TARGET} from cache" in back.stdout + back.stderr
    )
    assert result(root) == first
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(
        snakemake(root, "-n", "--", TARGET)
    )


def test_an_edit_reverted_is_restored_from_the_cache(tmp_path):
    root = make_workflow(tmp_path / "wf", DEFAULT)
    snakemake(root, "--", TARGET)
    first = result(root)
    write_config(root, deep_merge(DEFAULT, {"defaults": {"optimizer": {"lr": 0.01}}}))
    assert trained(snakemake(root, "--", TARGET))
    assert json.loads(result(root)[1])["config"]["train"]["optimizer"]["lr"] == 0.01
    write_config(root, DEFAULT)  # the edit reverted
    assert not trained(snakemake(root, "--", TARGET))
    assert result(root) == first
